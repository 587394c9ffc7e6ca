"""Command-line entry point: `pillion COMMAND ...`.

Each command lives in its own module exposing `configure(parser)` and `main(args) -> int`. Modules are
imported only when their command runs, so `pillion validate` never loads the event loop and `pillion run`
never loads the schema generator.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Kept here, not in the modules, so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pillion.cli.run", "run the sidecar with a configuration file"),
    "validate": ("pillion.cli.validate", "check a configuration file; exit 0 if valid, 1 if not"),
    "schema": ("pillion.cli.schema", "print the configuration's JSON Schema"),
    "demo": ("pillion.cli.demo", "run an example app with a sidecar in front of it"),
    "wait": ("pillion.cli.wait", "exit 0 once a sidecar's /ready answers 200, 1 on timeout"),
    "ca": ("pillion.cli.ca", "a small certificate authority for workload identities (SPIFFE)"),
    "top": ("pillion.cli.top", "a live terminal view of a running sidecar (admin API)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pillion", description="A small, fast service-mesh sidecar.")
    from pillion import __version__

    parser.add_argument("--version", action="version", version=f"pillion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Find the command first, then let its own module declare its options.
    known, _ = parser.parse_known_args(argv[:1] if argv and argv[0] in COMMANDS else argv)
    module = importlib.import_module(COMMANDS[known.command][0])
    sub = argparse.ArgumentParser(prog=f"pillion {known.command}", description=COMMANDS[known.command][1])
    module.configure(sub)
    args = sub.parse_args(argv[1:])
    code: int = module.main(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
