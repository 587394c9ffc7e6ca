"""Workload identity, certificates and TLS contexts.

Theory of operation: a workload's identity is a SPIFFE ID (`identity`), carried in an X.509 SVID that a
certificate authority issues (`ca`) and that a peer checks after the TLS handshake (`spiffe`). The
`cryptography` package is imported only by modules of this package, and only when a TLS feature is used:
importing `pillion.tls` itself loads nothing, so a sidecar without TLS never pays for it.
"""
