"""inventory_fn's engine: the per-subscription daily aggregates (kept by detect_fn) as JSON and a dashboard."""
