"""Workload identity, certificates and TLS contexts.

Theory of operation: a workload's identity is a SPIFFE ID (`identity`), carried in an X.509 SVID that a
certificate authority issues (`ca`) and that a peer checks after the TLS handshake (`spiffe`, reading the
DER with `der`). Importing `pillion.tls` itself loads nothing, so a sidecar without TLS never pays for
it, and a running sidecar never imports the `cryptography` package: only the CA tooling (`ca`,
`certinfo`, behind `pillion ca`) does.
"""
