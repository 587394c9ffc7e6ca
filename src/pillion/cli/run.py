"""`pillion run -c FILE`: load the configuration, start the Runtime, serve until told to stop."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="configuration file (YAML)")


def main(args: argparse.Namespace) -> int:
    from pillion.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    from pillion.telemetry.logging import setup_logging

    setup_logging(config.log_level)
    return run_config(config, args.config)


def run_config(config: object, path: str | None = None) -> int:
    import uvloop

    from pillion.config import Config
    from pillion.runtime.runtime import Runtime

    assert isinstance(config, Config)

    async def serve() -> int:
        runtime = Runtime(config, path)
        try:
            await runtime.start()
        except OSError as exc:
            import logging

            logging.getLogger("pillion").error("cannot start", extra={"error": str(exc)})
            await runtime.shutdown()
            return 1
        runtime.install_signal_handlers()
        return await runtime.serve()

    code: int = uvloop.run(serve())
    return code
