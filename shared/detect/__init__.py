"""detect_fn's engine: normalized events → rules → exact Table state → alerts.

`engine` runs a trigger batch; `rules` load and evaluate rule files; `state` is the Table-backed,
redelivery-safe key state; `alerts` stores and publishes what fires; `inventory_aggregates` and
`inventory_table` keep the per-subscription daily aggregates that `shared.inventory` serves.
"""
