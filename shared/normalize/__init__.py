"""normalize_fn's engine: raw bodies → normalized events and dead letters.

`batch` runs a trigger batch (split, map, encode, dead-letter, fan out); `mappers` hold one mapper per
record shape; `catalog` describes and classifies operations from `data/` and the catalog the app stores, which
`catalog_sync` keeps current (the daily timer, and `python -m shared catalog sync` for `data/`).
"""
