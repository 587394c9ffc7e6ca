"""`pillion schema`: print the configuration's JSON Schema (draft 2020-12).

Theory of operation: the schema is generated from the configuration model on each run, so it always
matches the installed version; save it for an editor with `pillion schema > pillion.schema.json`.
"""

from __future__ import annotations

import argparse
import json

from pillion.config import json_schema


def configure(parser: argparse.ArgumentParser) -> None:
    """No options."""


def main(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return 0
