"""The admin server: health, readiness, metrics, configuration and lifecycle endpoints over HTTP/1.1.

`start_admin(target, host, port)` serves an `AdminTarget` (the Runtime) and returns an `AdminServer`;
`handlers.ENDPOINTS` is the table of what it answers.
"""

from pillion.admin.server import AdminServer, start_admin
from pillion.admin.target import AdminTarget, ListenersTarget

__all__ = ["AdminServer", "AdminTarget", "ListenersTarget", "start_admin"]
