"""Filters: per-route request policies applied between routing and forwarding.

Each filter is one module holding its decision logic, built once per route from that route's config, and
its metric families. A filter decides (let through, refuse with a local reply, delay); it never does I/O
itself, keeps nothing per request, and is cheap enough to consult on every request of its route.
"""
