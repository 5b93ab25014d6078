"""delivery_fn's engine: routes alerts from the alerts table to webhooks and Log Analytics through an outbox.

Detection only marks a stored alert as not yet routed; everything here runs later, on a timer, so a
destination that is down never slows or changes detection.
"""
