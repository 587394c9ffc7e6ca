"""The HTTP data plane: listener → downstream connection → router → cluster → endpoint pool → upstream.

`downstream.py` and `upstream.py` are the only modules that touch sockets; everything else is plain
logic over config and state. There is no coroutine per request: both sides are asyncio Protocols driven
by httptools callbacks, which is what keeps the per-request cost near a C proxy's.
"""
