"""Telemetry: metrics (`stats`, `prometheus`, `process`), JSON process logs (`logging`), the access log.

Metrics are declared once in a `stats.Registry` and updated on the hot path by attribute operations;
`prometheus.render` turns the registry into exposition text at scrape time. See each module's docstring.
"""
