"""`pillion run -c CFG -- CMD ARGS...`: the sidecar supervises the app, for Jobs, VMs and systemd.

Theory of operation: the sidecar starts first; once its listeners are bound, the app is started as a
child (stdin, stdout and stderr shared). Signals meant for the pod or unit (SIGTERM, SIGINT, SIGQUIT,
SIGUSR1, SIGUSR2) go to the app, and the sidecar keeps serving the app's calls meanwhile: the app decides
when it is done. SIGHUP still reloads the sidecar's config. When the app exits, the sidecar drains and
the process exits with the app's code (128 + N if a signal N killed it), which is what makes a Job
complete. If the sidecar is told to quit (`POST /quitquitquit`), the app gets SIGTERM and `drain_timeout`
to exit before it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from pillion.runtime.runtime import Runtime

log = logging.getLogger("pillion.supervisor")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


async def supervise(runtime: Runtime, argv: Sequence[str]) -> int:
    """Run the app until it exits, then drain the sidecar; the app's exit code."""
    loop = asyncio.get_running_loop()
    try:
        app = await asyncio.create_subprocess_exec(*argv)
    except OSError as exc:
        log.error("cannot start the app", extra={"command": list(argv), "error": str(exc)})
        runtime.quit()
        await runtime.shutdown()
        return 127  # the shell's "command not found"
    log.info("app started", extra={"pid": app.pid, "command": list(argv)})

    def forward(sig: signal.Signals) -> None:
        if app.returncode is None:
            log.info("forwarding signal to the app", extra={"signal": sig.name})
            app.send_signal(sig)

    for sig in FORWARDED:
        loop.add_signal_handler(sig, forward, sig)
    loop.add_signal_handler(signal.SIGHUP, runtime.request_reload)

    exited = asyncio.ensure_future(app.wait())
    stopping = asyncio.ensure_future(runtime.stopped())
    await asyncio.wait((exited, stopping), return_when=asyncio.FIRST_COMPLETED)
    if not exited.done():  # the sidecar was told to quit: the app goes first
        log.info("sidecar quitting: stopping the app")
        forward(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), float(runtime.config.drain_timeout))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                app.kill()
            await exited
    stopping.cancel()
    code = exited.result()
    log.info("app exited", extra={"code": code})
    runtime.quit()
    await runtime.shutdown()
    return code if code >= 0 else 128 - code
