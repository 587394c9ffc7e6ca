"""The SSL object every Pillion TLS connection gets: `ssl.SSLObject` without a Python frame per record.

Theory of operation. uvloop's TLS transport calls `read`, `write` and `pending` on its `SSLObject` for
every TLS record it receives or sends (a request and its response are a few of each). `ssl.SSLObject`'s
are Python methods that only forward to the C object underneath (`_ssl._SSLSocket`), so each call is an
interpreted frame. `DirectSSLObject` puts the C object's own three methods on the instance, where they
shadow the class's: same arguments, same results, same exceptions, no frame. Everything else
(`getpeercert`, `unwrap`, `context`, `version`...) is `ssl.SSLObject`'s.

`SSLContext.wrap_bio` makes its objects with `sslobject_class._create(...)`, which stores the C object
as `_sslobj`: both are CPython's own, unchanged since 3.7, and tests/unit/test_tls_sslobject.py fails if
either changes.

Imported only by a process that uses TLS (the class derives from the real `ssl.SSLObject`).
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["DirectSSLObject"]


class DirectSSLObject(ssl.SSLObject):
    """An `ssl.SSLObject` whose `read`, `write` and `pending` are the C object's methods."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        c = self._sslobj  # type: ignore[attr-defined]
        self.read = c.read  # type: ignore[method-assign]
        self.write = c.write  # type: ignore[method-assign]
        self.pending = c.pending  # type: ignore[method-assign]
        return self
