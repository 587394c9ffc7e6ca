"""Fuzz configuration loading: any text either loads or is refused with a ConfigError.

    python fuzz/fuzz_config.py -max_total_time=60 -timeout=1 -rss_limit_mb=2048 \\
        .fuzz/config fuzz/corpus/config

The input is the config file's text (UTF-8, undecodable bytes replaced). Checks:
  - `load_config_text` returns a Config or raises ConfigError; any other exception is a crash;
  - a config that loads round-trips: its dump (`config_to_dict`, what /config_dump serves) loads back
    to an equal Config, as pillion.config.dump promises;
  - each line is also given to `parse_duration`, `parse_size` and `parse_address`, which return a value
    or raise ValueError; a value formats back to text that parses to the same value.
The environment for `${VAR}` references is fixed (ENV), so a run does not depend on the machine's.
"""

from __future__ import annotations

import json

import atheris

with atheris.instrument_imports(include=["pillion"]):
    from pillion.config import (
        ConfigError,
        config_to_dict,
        format_duration,
        format_size,
        load_config_text,
        parse_duration,
        parse_size,
    )
    from pillion.config.address import parse_address

from fuzzing import fuzz

ENV = {"PORT": "8080", "HOST": "127.0.0.1", "EMPTY": "", "TIMEOUT": "250ms", "SIZE": "1MiB", "DOLLAR": "$x"}
MAX_LINES = 16


class Finding(AssertionError):
    """A broken promise of the config loader; the message says which."""


def check_units(line: str) -> None:
    try:
        seconds = parse_duration(line)
    except ValueError:
        pass
    else:
        text = format_duration(seconds)
        if parse_duration(text) != seconds:
            raise Finding(f"duration {line!r} = {seconds!r} formats as {text!r}, which parses differently")
    try:
        size = parse_size(line)
    except ValueError:
        pass
    else:
        text = format_size(size)
        if parse_size(text) != size:
            raise Finding(f"size {line!r} = {size!r} formats as {text!r}, which parses differently")
    try:
        address = parse_address(line)
    except ValueError:
        pass
    else:
        if parse_address(str(address)) != address:
            raise Finding(f"address {line!r} = {address!r} prints as {address}, which parses differently")


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for line in text.splitlines()[:MAX_LINES]:
        check_units(line)
    try:
        config = load_config_text(text, env=ENV)
    except ConfigError:
        return
    dumped = json.dumps(config_to_dict(config))
    try:
        again = load_config_text(dumped, env={})
    except ConfigError as exc:
        raise Finding(f"the dump of a valid config does not load: {exc}\n{dumped}") from None
    if again != config:
        raise Finding(f"the dump loads to a different config:\n{config}\n{again}")


if __name__ == "__main__":
    fuzz(test_one_input)
