"""HTTP/1.1 message rules that the proxy applies: hop-by-hop headers, framing, local replies."""
