"""`pillion run -c FILE [-- CMD ARGS...]`: load the configuration, start the Runtime, serve until told
to stop; or, with a command, start that app once the sidecar is up and exit with its code when it
exits (see pillion.runtime.supervisor)."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="after `--`: the app to run under the sidecar; pillion exits with its exit code",
    )


def main(args: argparse.Namespace) -> int:
    from pillion.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    from pillion.tls.loading import defer_ssl, tls_uses

    if not tls_uses(config):
        defer_ssl()  # before anything imports asyncio: a plaintext sidecar does without OpenSSL
    from pillion.telemetry.logging import setup_logging

    setup_logging(config.log_level)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    return run_config(config, args.config, command)


def run_config(config: object, path: str | None = None, command: list[str] | None = None) -> int:
    import uvloop

    from pillion.config import Config
    from pillion.runtime.runtime import Runtime

    assert isinstance(config, Config)

    async def serve() -> int:
        import logging

        try:
            runtime = Runtime(config, path)
        except (ValueError, RuntimeError, OSError) as exc:
            # What only shows when files are read: identity certificates, the access-log path, a
            # missing optional package. The message names the config path and the problem.
            logging.getLogger("pillion").error("cannot start", extra={"error": str(exc)})
            return 1
        try:
            await runtime.start()
        except OSError as exc:
            logging.getLogger("pillion").error("cannot start", extra={"error": str(exc)})
            await runtime.shutdown()
            return 1
        if command:
            from pillion.runtime.supervisor import supervise

            return await supervise(runtime, command)
        runtime.install_signal_handlers()
        return await runtime.serve()

    code: int = uvloop.run(serve())
    return code
