"""Pillion: a small, fast, readable service-mesh sidecar.

The data plane follows Envoy's nouns: a Listener accepts downstream connections, a Router matches each
request to a Route, the Route names a Cluster, the Cluster's balancer picks an Endpoint, and an upstream
connection pool carries the request there. The Runtime owns all of it; the admin server reads it.
"""

__version__ = "0.1.0"
