"""Loading configurations: the happy path, every class of error with its exact message, and `${VAR}`."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from pillion.config import (
    Address,
    Config,
    ConfigError,
    Endpoint,
    config_to_dict,
    load_config,
    load_config_text,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "pillion.yaml"

FULL = """\
service: orders
admin:
  address: 127.0.0.1:9901
  ready_check: {cluster: app, path: /healthz, timeout: 500ms}
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    routes:
      - match: {prefix: /api/, host: "*.example.com"}
        cluster: payments
        name: api
        timeout: 2.5s
      - match: {path: /exact}
        cluster: app
      - cluster: app
    limits:
      max_request_headers_size: 32KiB
      max_request_headers: 50
      max_request_body_size: 10MB
      request_headers_timeout: 5s
      idle_timeout: 1m
  - name: outbound
    address: "[::1]:15001"
    routes: [{cluster: payments}]
clusters:
  - name: app
    endpoints: [127.0.0.1:8080, localhost:8081]
    connect_timeout: 250ms
    max_idle_connections: 8
    idle_timeout: 10s
  - name: payments
    endpoints: ["[::1]:9000"]
drain_timeout: 30s
access_log: {enabled: true, path: /var/log/pillion.log}
log_level: debug
"""

# Pieces for building small broken configs.
CLUSTERS = "clusters: [{name: app, endpoints: [127.0.0.1:8080]}]\n"


def load(text: str, env: Mapping[str, str] | None = None) -> Config:
    return load_config_text(textwrap.dedent(text), env={} if env is None else env)


def errors_of(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    return caught.value.errors


def listener(routes: str = "[{cluster: app}]", address: str = "0.0.0.0:15006", name: str = "in") -> str:
    return f"  - {{name: {name}, address: '{address}', routes: {routes}}}\n"


# --- valid configurations -------------------------------------------------------------------------


def test_example_file_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.service == "orders"
    assert cfg.admin.address == Address("127.0.0.1", 9901)
    (inbound,) = cfg.listeners
    assert inbound.address == Address("0.0.0.0", 15006)
    assert inbound.routes[0].match.prefix == "/"
    assert inbound.routes[0].cluster == "app"
    assert inbound.routes[0].name == "route0"
    assert cfg.clusters[0].endpoints == (Endpoint(address=Address("127.0.0.1", 8080)),)
    assert cfg.clusters[0].connect_timeout == 1.0


def test_full_config_values() -> None:
    cfg = load(FULL)
    assert cfg.admin.ready_check is not None
    assert cfg.admin.ready_check.timeout == 0.5
    api, exact, catch_all = cfg.listeners[0].routes
    assert (api.name, api.timeout, api.match.host) == ("api", 2.5, "*.example.com")
    assert (exact.name, exact.match.path, exact.timeout) == ("route1", "/exact", 15.0)
    assert catch_all.name == "route2"
    assert catch_all.match.prefix is None
    limits = cfg.listeners[0].limits
    assert limits.max_request_headers_size == 32 * 1024
    assert limits.max_request_body_size == 10_000_000
    assert limits.idle_timeout == 60.0
    assert cfg.listeners[1].address == Address("::1", 15001)
    assert cfg.listeners[1].limits.max_request_headers == 100  # default
    assert cfg.clusters[1].endpoints == (Endpoint(address=Address("::1", 9000)),)
    assert cfg.access_log.enabled is True
    assert cfg.log_level == "debug"


@pytest.mark.parametrize("text", [FULL, EXAMPLE.read_text()], ids=["full", "example"])
def test_dump_round_trips(text: str) -> None:
    cfg = load(text)
    dumped = config_to_dict(cfg)
    assert load(yaml.safe_dump(dumped)) == cfg


def test_dump_notation() -> None:
    dumped = config_to_dict(load(FULL))
    assert dumped["admin"]["address"] == "127.0.0.1:9901"
    assert dumped["listeners"][0]["routes"][0]["timeout"] == "2.5s"
    assert dumped["listeners"][0]["limits"]["max_request_headers_size"] == "32KiB"
    assert dumped["listeners"][0]["limits"]["idle_timeout"] == "1m"
    assert dumped["listeners"][1]["address"] == "[::1]:15001"
    assert dumped["clusters"][0]["connect_timeout"] == "250ms"
    assert dumped["admin"]["ready_check"]["timeout"] == "500ms"
    assert dumped["listeners"][1]["routes"][0]["match"] == {
        "prefix": None,
        "path": None,
        "regex": None,
        "host": None,
        "methods": [],
        "headers": [],
        "query": [],
    }


def test_minimal_config_gets_defaults() -> None:
    cfg = load("service: orders\n")
    assert cfg.listeners == () and cfg.clusters == ()
    assert cfg.admin.address == Address("127.0.0.1", 9901)
    assert cfg.drain_timeout == 5.0
    assert cfg.log_level == "info"


def test_yaml_merge_keys_are_allowed() -> None:
    cfg = load(
        """\
        service: orders
        clusters:
          - &base {name: a, endpoints: [127.0.0.1:1], connect_timeout: 2s}
          - {<<: *base, name: b}
        """
    )
    assert [c.name for c in cfg.clusters] == ["a", "b"]
    assert cfg.clusters[1].connect_timeout == 2.0


def test_port_zero_never_collides() -> None:
    cfg = load(
        "service: s\nadmin: {address: 127.0.0.1:0}\nlisteners:\n"
        + listener(address="127.0.0.1:0", name="a")
        + listener(address="127.0.0.1:0", name="b")
        + CLUSTERS
    )
    assert len(cfg.listeners) == 2


# --- structural errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "service: s\nlisteners:\n  - {name: in, adress: 0.0.0.0:1}\n",
            [
                "listeners[0].adress: unknown key; did you mean 'address'?",
                "listeners[0].address: missing required key",
            ],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], zzz: 1}]\n",
            [
                "clusters[0].zzz: unknown key; expected one of: name, endpoints, lb, hash_on, "
                "dns_refresh, connect_timeout, max_idle_connections, idle_timeout, circuit_breaker, "
                "retry_budget, outlier_detection, health_check, no_healthy_endpoint, tls"
            ],
        ),
        ("admin: {}\n", ["service: missing required key"]),
        ("service: s\nclusters: [{name: a}]\n", ["clusters[0].endpoints: missing required key"]),
        (
            "service: s\nlisteners: [{name: 5, address: 0.0.0.0:1}]\n",
            ["listeners[0].name: expected a string, got integer 5"],
        ),
        ("service: s\nclusters: {name: a}\n", ["clusters: expected a list, got a mapping"]),
        ("service: s\nadmin: 127.0.0.1:9901\n", ["admin: expected a mapping, got string '127.0.0.1:9901'"]),
        ("service: s\nadmin:\n", ["admin: expected a mapping, got null"]),
        (
            "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], max_idle_connections: -1}]\n",
            ["clusters[0].max_idle_connections: must not be negative, got -1"],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], max_idle_connections: '8'}]\n",
            ["clusters[0].max_idle_connections: expected an integer, got string '8'"],
        ),
        (
            "service: s\naccess_log: {enabled: 'yes'}\n",
            ["access_log.enabled: expected true or false, got string 'yes'"],
        ),
        (
            "service: s\nlog_level: INFO\n",
            [
                "log_level: must be one of 'debug', 'info', 'warning', 'error', got string 'INFO'; "
                "did you mean 'info'?"
            ],
        ),
        (
            "service: s\nlisteners: [{name: in, address: 0.0.0.0:1, protocol: udp}]\n",
            ["listeners[0].protocol: must be one of 'http', 'tcp', got string 'udp'"],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], connect_timeout: 1 sec}]\n",
            [
                "clusters[0].connect_timeout: invalid duration '1 sec': expected a number with an optional "
                "unit (us, ms, s, m, h), e.g. '250ms' or '2s'"
            ],
        ),
        (
            "service: s\ndrain_timeout: -5s\n",
            ["drain_timeout: negative duration '-5s' is not allowed"],
        ),
        (
            "service: s\nlisteners: [{name: in, address: 0.0.0.0:1, limits: {max_request_body_size: 1KB}}]\n",
            [
                "listeners[0].limits.max_request_body_size: invalid size '1KB': expected a number of bytes "
                "with an optional unit (B, kB, KiB, MB, MiB, GB, GiB), e.g. '64KiB' ('KB' is ambiguous: "
                "write 'kB' for 1000 or 'KiB' for 1024)"
            ],
        ),
        (
            "service: s\nlisteners: [{name: in, address: 0.0.0.0:99999}]\n",
            ["listeners[0].address: invalid address '0.0.0.0:99999': port 99999 is out of range 0-65535"],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: [8080]}]\n",
            ["clusters[0].endpoints[0]: expected an address 'host:port', got integer 8080"],
        ),
        ("- service: s\n", ["(top level): expected a mapping, got a list"]),
    ],
)
def test_structural_errors(text: str, expected: list[str]) -> None:
    assert errors_of(text) == expected


# --- cross-reference errors -----------------------------------------------------------------------

PAYMENTS = (
    "clusters:\n"
    "  - {name: app, endpoints: [127.0.0.1:8080]}\n"
    "  - {name: payments, endpoints: [127.0.0.1:9]}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "service: s\nlisteners:\n" + listener("[{cluster: app}, {cluster: paymnts}]") + PAYMENTS,
            ["listeners[0].routes[1].cluster: unknown cluster 'paymnts'; did you mean 'payments'?"],
        ),
        (
            "service: s\nlisteners:\n" + listener("[{cluster: zzz}]") + CLUSTERS,
            ["listeners[0].routes[0].cluster: unknown cluster 'zzz'"],
        ),
        (
            "service: s\nadmin: {ready_check: {cluster: ap}}\n" + CLUSTERS,
            ["admin.ready_check.cluster: unknown cluster 'ap'; did you mean 'app'?"],
        ),
        (
            "service: s\nadmin: {ready_check: {cluster: app, path: healthz}}\n" + CLUSTERS,
            ["admin.ready_check.path: must start with '/', got 'healthz'"],
        ),
        (
            "service: s\nlisteners:\n"
            + listener(name="in", address="0.0.0.0:1")
            + listener(name="in", address="0.0.0.0:2")
            + CLUSTERS,
            ["listeners[1].name: duplicate listener name 'in' (first used at listeners[0])"],
        ),
        (
            "service: s\nclusters:\n  - {name: a, endpoints: [127.0.0.1:1]}\n"
            "  - {name: a, endpoints: [127.0.0.1:2]}\n",
            ["clusters[1].name: duplicate cluster name 'a' (first used at clusters[0])"],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: []}]\n",
            ["clusters[0].endpoints: a cluster needs at least one endpoint"],
        ),
        (
            "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], connect_timeout: 0}]\n",
            ["clusters[0].connect_timeout: must be greater than 0"],
        ),
        (
            "service: s\nlisteners:\n"
            + listener("[{match: {prefix: /a, path: /b}, cluster: app}]")
            + CLUSTERS,
            ["listeners[0].routes[0].match: set one of 'prefix', 'path' and 'regex'"],
        ),
        (
            "service: s\nlisteners:\n" + listener("[{match: {prefix: api}, cluster: app}]") + CLUSTERS,
            ["listeners[0].routes[0].match.prefix: must start with '/', got 'api'"],
        ),
        (
            "service: s\nlisteners:\n" + listener("[{match: {path: x}, cluster: app}]") + CLUSTERS,
            ["listeners[0].routes[0].match.path: must start with '/', got 'x'"],
        ),
        (
            "service: s\nlisteners:\n" + listener("[{match: {host: 'a.*.com'}, cluster: app}]") + CLUSTERS,
            ["listeners[0].routes[0].match.host: invalid host 'a.*.com': '*.' is allowed only as a prefix"],
        ),
        (
            "service: s\nlisteners:\n"
            + listener("[{cluster: app}, {cluster: app, name: route0}]")
            + CLUSTERS,
            [
                "listeners[0].routes[1].name: duplicate route name 'route0' "
                "(first used at listeners[0].routes[0])"
            ],
        ),
        (
            "service: s\nlisteners:\n"
            + listener(name="a", address="127.0.0.1:15006")
            + listener(name="b", address="127.0.0.1:15006")
            + CLUSTERS,
            ["listeners[1].address: 127.0.0.1:15006 collides with listeners[0].address (127.0.0.1:15006)"],
        ),
        (
            "service: s\nlisteners:\n"
            + listener(name="a", address="10.0.0.1:80")
            + listener(name="b", address="0.0.0.0:80")
            + CLUSTERS,
            ["listeners[1].address: 0.0.0.0:80 collides with listeners[0].address (10.0.0.1:80)"],
        ),
        (
            "service: s\nlisteners:\n" + listener(address="127.0.0.1:9901") + CLUSTERS,
            ["listeners[0].address: 127.0.0.1:9901 collides with admin.address (127.0.0.1:9901)"],
        ),
        ("service: ''\n", ["service: must not be empty"]),
        (
            "service: Orders Service\n",
            [
                "service: invalid name 'Orders Service': use letters, digits, '.', '-' or '_', starting and "
                "ending with a letter or digit, at most 63 characters"
            ],
        ),
        (
            "service: s\naccess_log: {path: ''}\n",
            ["access_log.path: must not be empty (use '-' for standard output)"],
        ),
    ],
)
def test_cross_reference_errors(text: str, expected: list[str]) -> None:
    assert errors_of(text) == expected


def test_header_edits_may_not_touch_framing_or_hop_by_hop_fields() -> None:
    routes = (
        "[{cluster: app, request_headers_add: [{name: Content-Length, value: '0'}, {name: x-ok, value: '1'}],"
        " request_headers_remove: [transfer-encoding, x-gone], response_headers_remove: [content-length],"
        " response_headers_add: [{name: Connection, value: close}]}]"
    )
    assert errors_of("service: s\nlisteners:\n" + listener(routes) + CLUSTERS) == [
        "listeners[0].routes[0].request_headers_add[0]: 'Content-Length' is managed by Pillion",
        "listeners[0].routes[0].response_headers_add[0]: 'Connection' is managed by Pillion",
        "listeners[0].routes[0].request_headers_remove[0]: 'transfer-encoding' is managed by Pillion",
        "listeners[0].routes[0].response_headers_remove[0]: 'content-length' is managed by Pillion",
    ]


def test_listeners_on_different_hosts_same_port_are_fine() -> None:
    cfg = load(
        "service: s\nlisteners:\n"
        + listener(name="a", address="127.0.0.1:80")
        + listener(name="b", address="10.0.0.1:80")
        + CLUSTERS
    )
    assert len(cfg.listeners) == 2


def test_all_errors_are_collected() -> None:
    text = """\
    service: s
    bogus: 1
    listeners:
      - name: in
        address: 0.0.0.0:70000
        routes:
          - {cluster: app, timeout: soon}
          - {clustr: app}
    clusters:
      - {name: app, endpoints: [127.0.0.1:8080], max_idle_connections: many}
    log_level: loud
    """
    assert errors_of(text) == [
        "bogus: unknown key; expected one of: service, admin, listeners, clusters, drain_timeout, "
        "metrics, access_log, overload, tracing, identity, log_level, watch",
        "listeners[0].address: invalid address '0.0.0.0:70000': port 70000 is out of range 0-65535",
        "listeners[0].routes[0].timeout: invalid duration 'soon': expected a number with an optional unit "
        "(us, ms, s, m, h), e.g. '250ms' or '2s'",
        "listeners[0].routes[1].clustr: unknown key; did you mean 'cluster'?",
        "clusters[0].max_idle_connections: expected an integer, got string 'many'",
        "log_level: must be one of 'debug', 'info', 'warning', 'error', got string 'loud'",
    ]


def test_all_cross_reference_errors_are_collected() -> None:
    text = (
        "service: s\nlisteners:\n"
        + listener("[{cluster: a}, {cluster: b}]", name="x")
        + listener(name="x")
        + "clusters: [{name: c, endpoints: []}]\n"
    )
    assert errors_of(text) == [
        "clusters[0].endpoints: a cluster needs at least one endpoint",
        "listeners[0].routes[0].cluster: unknown cluster 'a'",
        "listeners[0].routes[1].cluster: unknown cluster 'b'",
        "listeners[1].routes[0].cluster: unknown cluster 'app'",
        "listeners[1].name: duplicate listener name 'x' (first used at listeners[0])",
        "listeners[1].address: 0.0.0.0:15006 collides with listeners[0].address (0.0.0.0:15006)",
    ]


def test_config_error_str_is_one_error_per_line() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert error.errors == ["a: one", "b: two"]


# --- environment substitution ---------------------------------------------------------------------

ENV_CONFIG = """\
service: ${SERVICE:-orders}
listeners:
  - name: inbound
    address: 0.0.0.0:${PORT}
    routes: [{cluster: app, match: {prefix: /cost$$/}}]
clusters:
  - name: app
    endpoints: ["${APP_HOST:-127.0.0.1}:8080"]
    max_idle_connections: ${POOL:-16}
access_log: {enabled: "${LOG:-false}"}
"""


def test_env_substitution() -> None:
    cfg = load(ENV_CONFIG, {"PORT": "15006", "APP_HOST": "app.local", "POOL": "4", "LOG": "true"})
    assert cfg.service == "orders"  # default
    assert type(cfg.service) is str  # the substitution marker does not leak into the model
    assert cfg.listeners[0].address == Address("0.0.0.0", 15006)
    assert cfg.listeners[0].routes[0].match.prefix == "/cost$/"
    assert cfg.clusters[0].endpoints == (Endpoint(address=Address("app.local", 8080)),)
    assert cfg.clusters[0].max_idle_connections == 4
    assert cfg.access_log.enabled is True


def test_env_defaults_apply_to_unset_and_empty() -> None:
    cfg = load(ENV_CONFIG, {"PORT": "1", "SERVICE": "", "APP_HOST": ""})
    assert cfg.service == "orders"
    assert cfg.clusters[0].endpoints == (Endpoint(address=Address("127.0.0.1", 8080)),)
    assert cfg.clusters[0].max_idle_connections == 16
    assert cfg.access_log.enabled is False


def test_env_unset_variable_names_the_path() -> None:
    assert errors_of(ENV_CONFIG, {}) == ["listeners[0].address: environment variable 'PORT' is not set"]


def test_env_errors_are_collected_with_other_errors() -> None:
    text = "service: ${NAME}\nclusters: [{name: a, endpoints: ['${HOST}:1', 'x:${Y:-}'], bogus: 1}]\n"
    assert errors_of(text) == [
        "service: environment variable 'NAME' is not set",
        "clusters[0].endpoints[0]: environment variable 'HOST' is not set",
        "clusters[0].bogus: unknown key; expected one of: name, endpoints, lb, hash_on, "
        "dns_refresh, connect_timeout, max_idle_connections, idle_timeout, circuit_breaker, "
        "retry_budget, outlier_detection, health_check, no_healthy_endpoint, tls",
        "clusters[0].endpoints[1]: invalid address 'x:': port '' is not a number",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${1X}", "service: invalid reference '${1X}': expected ${NAME} or ${NAME:-default}"),
        ("${A:-${B}}", "service: invalid reference '${A:-${B}': expected ${NAME} or ${NAME:-default}"),
        ("a${B", "service: unterminated '${' in 'a${B'"),
    ],
)
def test_env_malformed_references(value: str, expected: str) -> None:
    assert errors_of(f"service: '{value}'\n") == [expected]


def test_env_value_cannot_inject_structure() -> None:
    cfg = load("service: s\naccess_log: {path: '${P}'}\n", {"P": "x}\nlog_level: debug\nfoo: {"})
    assert cfg.access_log.path == "x}\nlog_level: debug\nfoo: {"
    assert cfg.log_level == "info"


def test_env_literal_dollar_and_lone_dollar() -> None:
    cfg = load("service: s\naccess_log: {path: '/logs/$$HOME/$x$'}\n", {"HOME": "nope"})
    assert cfg.access_log.path == "/logs/$HOME/$x$"


def test_plain_quoted_number_is_still_a_type_error() -> None:
    errors = errors_of(
        "service: s\nclusters: [{name: a, endpoints: [127.0.0.1:1], max_idle_connections: '4'}]\n"
    )
    assert errors == ["clusters[0].max_idle_connections: expected an integer, got string '4'"]


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILLION_TEST_SERVICE", "from-env")
    assert load_config_text("service: ${PILLION_TEST_SERVICE}\n").service == "from-env"


# --- YAML and file errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service: orders\n  bad: indent\n", "<string>:2:6: mapping values are not allowed in this context"),
        ("service: a\nservice: b\n", "<string>:2:1: duplicate key 'service' (first at line 1)"),
        (
            "service: [\n",
            "<string>:2:1: did not find expected node content (while parsing a flow node)",
        ),
    ],
)
def test_yaml_syntax_errors_report_line_and_column(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_yaml_error_uses_source_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("a: [", env={}, source="pillion.yaml")
    assert caught.value.errors[0].startswith("pillion.yaml:2:1: ")


def test_empty_file() -> None:
    assert errors_of("# nothing\n") == ["<string>: the configuration is empty; it needs at least 'service'"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.errors == [f"{missing}: cannot read the file: No such file or directory"]


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"service: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}: not UTF-8 text (invalid continuation byte at byte 12)"]


def test_load_config_reports_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("service: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors[0].startswith(f"{path}:2:1: ")


def test_yaml_12_booleans_only() -> None:
    # `on` is a key (YAML 1.1 would read it as True), and `yes` is not a boolean.
    cfg = load_config_text(
        "service: s\n"
        "listeners: [{name: l, address: 127.0.0.1:0, routes: [{cluster: c, retries: {on: [5xx, '503']}}]}]\n"
        "clusters: [{name: c, endpoints: [127.0.0.1:1]}]\n"
    )
    retries = cfg.listeners[0].routes[0].retries
    assert retries is not None and retries.on == ("5xx", "503")
    assert errors_of("service: s\naccess_log: {enabled: yes}\n") == [
        "access_log.enabled: expected true or false, got string 'yes'"
    ]


def test_an_alias_bomb_is_refused_at_once() -> None:
    """A few hundred bytes of nested aliases stand for billions of nodes; refused before any is built."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "service: s\n" + "\n".join(levels) + "\n"
    started = time.monotonic()
    assert errors_of(text) == ["<string>: too large once its aliases (*name) are expanded"]
    assert time.monotonic() - started < 1.0


def test_aliases_within_reason_still_work() -> None:
    text = textwrap.dedent(
        """\
        service: s
        clusters:
          - {name: a, endpoints: &both [127.0.0.1:1, 127.0.0.1:2]}
          - {name: b, endpoints: *both}
        """
    )
    cfg = load_config_text(text)
    assert [len(c.endpoints) for c in cfg.clusters] == [2, 2]


def test_deep_nesting_is_a_config_error() -> None:
    assert errors_of("service: s\nx: " + "[" * 200 + "]" * 200 + "\n") == [
        "<string>: nested more than 64 levels deep"
    ]
    assert errors_of("service: s\nx: &a [1, *a]\n") == [
        "<string>: an alias (*name) refers to a node that contains it"
    ]
