"""Loading a configuration: file -> YAML -> `${VAR}` substitution -> model objects -> cross-checks.

Theory of operation: each stage appends `<path>: <problem>` lines to one list, and `ConfigError` carries
them all. YAML syntax errors stop early (there is no data to go on) and are reported as
`<source>:<line>:<column>: <problem>`. The YAML loader is `safe_load`'s (libyaml's C parser when
available) with two changes: a key repeated in the same mapping is an error, where plain YAML would
silently keep the last value; and only `true`/`false` are booleans (YAML 1.2), so `on:` is a key.
Cross-reference checks need a fully converted `Config`, so they run only when substitution and
conversion found nothing wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pillion.config.convert import build
from pillion.config.env import substitute
from pillion.config.errors import ConfigError
from pillion.config.model import Config
from pillion.config.validate import check

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(_BaseLoader):
    """safe_load's loader, refusing duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            # `<<` merge keys may repeat, and merged keys may be overridden: that is their purpose.
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


# YAML 1.2 booleans: only true/false. YAML 1.1's `on`, `off`, `yes`, `no` would turn the key of
# `retries: {on: [5xx]}` into True, and a country code `no` into False.
_BOOL = "tag:yaml.org,2002:bool"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """The validated `Config` in file `path`; ConfigError listing every problem, unreadable file included."""
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return load_config_text(text, source=name)


def load_config_text(text: str, env: Mapping[str, str] | None = None, source: str = "<string>") -> Config:
    """The validated `Config` in YAML `text`, substituting from `env` (default: the process environment).

    `source` names the text in YAML syntax errors.
    """
    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError([f"{source}: the configuration is empty; it needs at least 'service'"])
    errors: list[str] = []
    data = substitute(data, os.environ if env is None else env, errors)
    cfg = build(Config, data, errors)
    if cfg is not None and not errors:
        cfg, problems = check(cfg)
        errors += problems
    if errors or cfg is None:
        raise ConfigError(errors)
    return cfg


# Aliases let a few hundred bytes of YAML stand for billions of nodes (the "billion laughs"): every later
# stage walks the expanded tree, so a document whose expansion is this large is refused before it is built.
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64  # a configuration is a dozen levels deep; every later stage recurses through them


class _TooDeep(Exception):
    pass


class _Recursive(Exception):
    pass


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    """How many nodes `node` stands for once aliases are expanded (each shared node counted once per
    use, computed once). _TooDeep past MAX_DEPTH levels; _Recursive for a node that contains itself."""
    known = memo.get(id(node))
    if known is not None:
        if known < 0:  # still being counted: the node contains itself (`a: &a [*a]`)
            raise _Recursive
        return known
    if depth > MAX_DEPTH:
        raise _TooDeep
    memo[id(node)] = -1
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, memo, depth + 1) + _expanded_size(value, memo, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, depth + 1)
    memo[id(node)] = size
    return size


def _parse_yaml(text: str, source: str) -> object:
    loader = _StrictLoader(text)  # a SafeLoader subclass: no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise ConfigError([f"{source}: too large once its aliases (*name) are expanded"])
        return loader.construct_document(node)
    except (RecursionError, _TooDeep):
        raise ConfigError([f"{source}: nested more than {MAX_DEPTH} levels deep"]) from None
    except _Recursive:
        raise ConfigError([f"{source}: an alias (*name) refers to a node that contains it"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigError([f"{where}: {problem}{context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    finally:
        loader.dispose()
