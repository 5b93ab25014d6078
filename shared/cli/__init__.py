"""`python -m shared ...`: local tooling (demo, replay, serve, normalize, rules, dead letters, catalog, Azurite).

It drives the engines exactly as the functions do; no engine imports it.
"""
