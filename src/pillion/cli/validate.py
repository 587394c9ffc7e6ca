"""`pillion validate -c FILE`: check a configuration file without running anything.

Theory of operation: load the file exactly as `pillion run` would (same loader, same environment
substitution), then report. Success is one line on stdout; failure is every error, one per line, on
stderr, so the output can be grepped or fed to an editor's problem matcher. Exit 0 if valid, 1 if not.
"""

from __future__ import annotations

import argparse
import sys

from pillion.config import ConfigError, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the configuration file")


def main(args: argparse.Namespace) -> int:
    path: str = args.config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    print(f"{path}: ok ({_count(len(cfg.listeners), 'listener')}, {_count(len(cfg.clusters), 'cluster')})")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
