"""On-demand context for investigations: IP addresses, operations, live ARM resources, Defender alerts.

`api` is the HTTP surface (routes, validation, status codes), `service.Enricher` does the work with the
I/O behind it (`shared.clients.arm`, `cache`, `servicetags`), and the verdicts in `resources` and the address
facts in `ip` are pure functions of what ARM and the offline data say.
"""
