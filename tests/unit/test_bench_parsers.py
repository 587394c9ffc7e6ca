"""The benchmark harness's pure parts: wrk/hey/Prometheus parsing, generated configs, medians and bars.

The harness lives in bench/ as plain scripts (run as `python bench/run.py`), so its directory is put on
sys.path here. Nothing in this file starts a server or a load generator except one `sleep`, to check that
ProcGroup.stop_all() leaves no child behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import loadgen
import minimal_proxy
import procs
import report
import run
import servers

WRK_OUT = """Running 8s test @ http://127.0.0.1:41234/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.41ms    2.55ms  21.64ms   87.19%
    Req/Sec    57.66k    42.01k  116.66k    63.33%
  Latency Distribution
     50%  240.00us
     75%    1.52ms
     90%    4.69ms
     99%    1.02s
  172447 requests in 8.02s, 26.31MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  21502.57
Transfer/sec:      3.28MB
"""

HEY_OUT = """
Summary:
  Total:\t2.0037 secs
  Requests/sec:\t1996.2712

Latency distribution:
  10% in 0.0001 secs
  50% in 0.0002 secs
  99% in 0.0007 secs

Status code distribution:
  [200]\t3990 responses
  [502]\t6 responses

Error distribution:
  [3]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
  [1]\tGet "http://127.0.0.1:1/": EOF
"""


def test_wrk_output_is_parsed_with_units_and_errors() -> None:
    r = loadgen.parse_wrk(WRK_OUT)
    assert r.requests == 172447
    assert r.rps == pytest.approx(21502.57)
    assert r.duration_s == pytest.approx(8.02)
    assert r.p(50) == pytest.approx(240.0)
    assert r.p(75) == pytest.approx(1520.0)
    assert r.p(99) == pytest.approx(1.02e6)
    assert r.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}
    assert r.non_2xx_3xx == 7
    assert r.errors == 12


def test_clean_wrk_output_has_no_errors_and_garbage_is_rejected() -> None:
    clean = "\n".join(x for x in WRK_OUT.splitlines() if "errors" not in x and "Non-2xx" not in x)
    assert loadgen.parse_wrk(clean).errors == 0
    with pytest.raises(ValueError):
        loadgen.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")
    assert loadgen.to_us("1.50m") == pytest.approx(90e6)


def test_hey_output_is_parsed() -> None:
    r = loadgen.parse_hey(HEY_OUT)
    assert r.rps == pytest.approx(1996.2712)
    assert r.p(50) == pytest.approx(200.0)
    assert r.p(99) == pytest.approx(700.0)
    assert r.requests == 3996
    assert r.non_2xx_3xx == 6
    assert r.errors == 4


def test_load_generator_command_lines() -> None:
    assert loadgen.wrk_argv("http://x/", 32, 8) == ["wrk", "-t1", "-c32", "-d8s", "--latency", "http://x/"]
    assert loadgen.hey_argv("http://x/", 5, 8, 250) == [
        "hey",
        "-z",
        "5s",
        "-c",
        "8",
        "-q",
        "250",
        "http://x/",
    ]


def test_request_counter_is_found_summed_or_reported_missing() -> None:
    text = (
        "# HELP pillion_http_requests_total Requests answered.\n"
        "# TYPE pillion_http_requests_total counter\n"
        'pillion_http_requests_total{route="a b}",code="200"} 100\n'
        'pillion_http_requests_total{route="x",code="502"} 5 1700000000\n'
        "other_requests_total 7\n"
    )
    assert loadgen.counter_total(text) == ("pillion_http_requests_total", 105.0)
    assert loadgen.counter_total("other_requests_total 7\nfoo 1\n") == ("other_requests_total", 7.0)
    assert loadgen.counter_total("# nothing\nfoo_total 1\n") is None


def test_pillion_config_has_the_fixed_shape(tmp_path: Path) -> None:
    off = yaml.safe_load(servers.pillion_yaml(8000, 9901, 7000, None))
    assert off == {
        "service": "bench",
        "admin": {"address": "127.0.0.1:9901"},
        "listeners": [
            {
                "name": "inbound",
                "address": "127.0.0.1:8000",
                "protocol": "http",
                "limits": {"request_headers_timeout": "2s"},  # the slowloris run relies on it
                "routes": [{"match": {"prefix": "/"}, "cluster": "app"}],
            }
        ],
        "clusters": [{"name": "app", "endpoints": ["127.0.0.1:7000"], "connect_timeout": "1s"}],
        "access_log": {"enabled": False},
    }
    log = tmp_path / "a dir" / "access.log"
    on = yaml.safe_load(servers.pillion_yaml(8000, 9901, 7000, log))
    assert on["access_log"] == {"enabled": True, "path": str(log)}


def test_baseline_proxies_are_configured_comparably(tmp_path: Path) -> None:
    hap = servers.haproxy_cfg(8000, 7000)
    for directive in (
        "nbthread 1",
        "mode http",
        "http-reuse always",
        "option forwardfor",
        "server app1 127.0.0.1:7000",
    ):
        assert directive in hap
    assert "\n    log " not in hap
    ngx = servers.nginx_proxy_conf(tmp_path, 8000, 7000)
    for directive in (
        "worker_processes 1;",
        "keepalive 64;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "access_log off;",
        "daemon off;",
    ):
        assert directive in ngx
    up = servers.upstream_conf(tmp_path, 7000)
    assert "master_process off;" in up and "keepalive_requests 1000000;" in up and "stub_status" in up


def _measurement(
    rnd: int, *, rps: float, cpu_s: float, p99_us: float, hey_p99_us: float, rss_kib: int
) -> report.Measurement:
    wrk = loadgen.WrkResult(
        requests=int(rps * 8), duration_s=8.0, rps=rps, percentiles_us={50: 200.0, 99: p99_us}
    )
    hey = loadgen.HeyResult(
        rps=2000.0, percentiles_us={50: 200.0, 99: hey_p99_us}, status_counts={200: 10000}, errors=0
    )
    return report.Measurement(
        round=rnd,
        slot=0,
        wrk=wrk,
        cpu_s=cpu_s,
        cpu_schedstat_s=cpu_s,
        upstream_cpu_s=1.0,
        rss_kib=rss_kib,
        pss_kib=None,
        server_core_busy_pct=99.0,
        load_core_busy_pct=70.0,
        outside_pct=1.0,
        steal_pct=0.0,
        hey=hey,
        hey_cpu_s=0.4,
        counter_name="pillion_http_requests_total",
        counter_delta=rps * 8,
    )


def _targets(
    pillion_cpu_s: float, pillion_hey_p99: float, pillion_rss: int
) -> dict[str, report.TargetReport]:
    hap = report.TargetReport("haproxy", "HAProxy")
    ngx = report.TargetReport("nginx", "nginx")
    pil = report.TargetReport("pillion", "Pillion")
    for rnd in (1, 2, 3):
        hap.rounds.append(_measurement(rnd, rps=20000, cpu_s=4.0, p99_us=2000, hey_p99_us=500, rss_kib=15000))
        ngx.rounds.append(_measurement(rnd, rps=20000, cpu_s=4.4, p99_us=2200, hey_p99_us=500, rss_kib=13000))
        pil.rounds.append(
            _measurement(
                rnd,
                rps=18000,
                cpu_s=pillion_cpu_s,
                p99_us=2300,
                hey_p99_us=pillion_hey_p99,
                rss_kib=pillion_rss,
            )
        )
    # one bad round must not move a median (its p99@2k slow, but under report.STALL_US: it still counts)
    hap.rounds[1] = _measurement(2, rps=5000, cpu_s=40.0, p99_us=90000, hey_p99_us=3000, rss_kib=15000)
    return {"haproxy": hap, "nginx": ngx, "pillion": pil}


def test_medians_ratios_and_bars() -> None:
    targets = _targets(pillion_cpu_s=4.0 * 0.9 * 1.1, pillion_hey_p99=600, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    assert summaries["haproxy"]["rps"] == 20000
    assert summaries["haproxy"]["cpu_us_per_req"] == pytest.approx(25.0)
    rat = report.ratios(summaries)
    assert rat["pillion/haproxy"]["cpu_us_per_req"] == pytest.approx(1.1)
    assert rat["pillion/haproxy"]["hey_p99_us"] == pytest.approx(1.2)
    assert rat["pillion/haproxy"]["rps"] == pytest.approx(0.9)
    assert [b.passed for b in report.bars(targets, summaries)] == [True, True, True]

    worse = _targets(pillion_cpu_s=4.0 * 0.9 * 1.2, pillion_hey_p99=700, pillion_rss=31 * 1024)
    worse_summaries = {k: report.summarize(t) for k, t in worse.items()}
    assert [b.passed for b in report.bars(worse, worse_summaries)] == [False, False, False]


def test_cpu_bars_show_the_paired_ratio_of_each_round() -> None:
    targets = _targets(pillion_cpu_s=4.0 * 0.9 * 1.1, pillion_hey_p99=600, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    cpu_bar = report.bars(targets, summaries)[0]
    # Round 2's HAProxy visit was the bad one (40x the CPU per request): its paired ratio shows it,
    # the median does not.
    assert cpu_bar.passed
    assert cpu_bar.detail.endswith("; per round: 1.10 0.03 1.10 (median 1.10x)")
    # Rounds are paired by number, not position, and a round only one side has is left out.
    del targets["haproxy"].rounds[0]
    paired = report.per_round_cpu(targets["pillion"], targets["haproxy"])
    assert paired == "; per round: 0.03 1.10 (median 0.56x)"
    assert report.per_round_cpu(targets["pillion"], None) == ""


def _p99_bar(haproxy: list[float], pillion: list[float]) -> tuple[report.Bar, dict[str, report.TargetReport]]:
    """The p99@2k bar over one round per pair of hey p99s (µs), and the rows it was made from."""
    hap = report.TargetReport("haproxy", "HAProxy")
    pil = report.TargetReport("pillion", "Pillion")
    for rnd, (h, p) in enumerate(zip(haproxy, pillion, strict=True), 1):
        hap.rounds.append(_measurement(rnd, rps=20000, cpu_s=4.0, p99_us=2000, hey_p99_us=h, rss_kib=15000))
        pil.rounds.append(_measurement(rnd, rps=18000, cpu_s=4.0, p99_us=2300, hey_p99_us=p, rss_kib=20480))
    targets = {"haproxy": hap, "pillion": pil}
    return report.bars(targets, {k: report.summarize(t) for k, t in targets.items()})[1], targets


def test_rounds_whose_haproxy_run_stalled_are_left_out_of_the_p99_bar() -> None:
    # The machine pauses during HAProxy's round-3 hey run. Counted, it would lift HAProxy's median from
    # 1.05 to 1.1 ms and pass Pillion at 1.18x; without it Pillion is at 1.24x. Pillion's own stall
    # (round 4) stays: it only makes Pillion look worse.
    bar, targets = _p99_bar([1000, 1000, 8400, 1100, 1200], [1300, 1300, 1300, 9000, 1300])
    assert not bar.passed
    assert bar.detail.startswith(
        "@2k: 1.3 ms vs 1.1 ms = 1.24x (limit 1.2x; hey resolution 0.1 ms; "
        "round 3 left out: HAProxy's p99@2k stalled (8.4 ms > 4 ms)); saturated wrk p99: "
    )
    assert report.summarize(targets["haproxy"])["hey_p99_us"] == 1100  # the table keeps every round
    # a round HAProxy has no run in is not counted either (1300 / median(1000, 1100, 1200))
    del targets["haproxy"].rounds[0]
    bar = report.bars(targets, {k: report.summarize(t) for k, t in targets.items()})[1]
    assert bar.detail.startswith("@2k: 1.3 ms vs 1.1 ms = 1.18x")
    assert "(8.4 ms > 4 ms); round 1 left out: no HAProxy p99@2k); saturated" in bar.detail
    # a round Pillion has no hey run in is named too (here it leaves too few: 2 of 3)
    bar, targets = _p99_bar([1000, 1000, 1100], [1300, 1300, 1300])
    targets["pillion"].rounds[1].hey = None
    bar = report.bars(targets, {k: report.summarize(t) for k, t in targets.items()})[1]
    assert bar.detail.startswith("NOT MEASURED: 2 of 3 rounds counted, fewer than 3; ")
    assert "round 2 left out: no Pillion p99@2k" in bar.detail
    # stalls in three of five rounds: too few left, so the bar fails, though the raw ratio (0.26x) passes
    bar, _ = _p99_bar([1000, 9000, 8400, 5000, 1200], [1300] * 5)
    assert not bar.passed
    assert bar.detail.startswith("NOT MEASURED: 2 of 5 rounds counted, fewer than 3; @2k: 1.3 ms vs 1.1 ms")
    assert "rounds 2, 3, 4 left out: HAProxy's p99@2k stalled (9.0 ms, 8.4 ms, 5.0 ms > 4 ms)" in bar.detail
    # 4 ms itself still counts: a p99 at the threshold is slow, not a stall
    bar, _ = _p99_bar([1000, report.STALL_US, 8400, 5000, 1200], [1300] * 5)
    assert bar.detail.startswith(
        "@2k: 1.3 ms vs 1.2 ms = 1.08x (limit 1.2x; hey resolution 0.1 ms; rounds 3, 4 "
    )
    assert bar.passed


def _meta() -> dict[str, object]:
    return {
        "date": "now",
        "machine": {"nproc": 2, "cpu_model": "x", "kernel": "k"},
        "versions": {"wrk": "4.1"},
        "params": {
            "mode": "quick",
            "server_cpu": 0,
            "load_cpu": 1,
            "rounds": 3,
            "order": ["haproxy"],
            "warmup_cmd": "w",
            "wrk_cmd": "w",
            "hey_cmd": "h",
            "hey_total_rps": 2000,
        },
    }


def test_a_failed_pillion_row_fails_every_bar_and_still_renders() -> None:
    targets = _targets(4.0, 500, 1024)
    targets["pillion"] = report.TargetReport("pillion", "Pillion", error="boom\n--- log tail ---\nTraceback")
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    verdicts = report.bars(targets, summaries)
    assert not any(b.passed for b in verdicts) and "FAILED" in verdicts[0].detail
    meta = _meta()
    text = report.render_markdown(meta, targets, summaries, report.ratios(summaries), verdicts)
    assert "| Pillion |" in text and "**FAILED**" in text and "**FAIL**" in text and "Traceback" in text
    doc = json.loads(report.to_json(meta, targets, summaries, report.ratios(summaries), verdicts))
    assert doc["targets"]["pillion"]["failed"] is True


def _with_minimal(cpu_s: float) -> dict[str, report.TargetReport]:
    targets = _targets(pillion_cpu_s=8.0, pillion_hey_p99=600, pillion_rss=20 * 1024)
    mini = report.TargetReport("minimal", "minimal uvloop+httptools proxy (calibration)")
    for rnd in (1, 2, 3):
        mini.rounds.append(
            _measurement(rnd, rps=19000, cpu_s=cpu_s, p99_us=2100, hey_p99_us=500, rss_kib=9000)
        )
    return {
        "haproxy": targets["haproxy"],
        "nginx": targets["nginx"],
        "minimal": mini,
        "pillion": targets["pillion"],
    }


def test_the_minimal_row_gets_ratio_columns_and_an_informational_line_but_no_bar() -> None:
    targets = _with_minimal(cpu_s=5.0)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    rat = report.ratios(summaries)
    # pillion 8.0 s / 144k req = 55.6 us; minimal 5.0 s / 152k req = 32.9 us; haproxy 25 us
    assert rat["pillion/minimal"]["cpu_us_per_req"] == pytest.approx((8.0 / 144000) / (5.0 / 152000))
    assert rat["minimal/haproxy"]["cpu_us_per_req"] == pytest.approx((5.0 / 152000) / 25e-6)
    verdicts = report.bars(targets, summaries)
    assert verdicts == report.bars(_targets(8.0, 600, 20 * 1024), summaries)  # the bars ignore minimal
    floor = report.floor_line(targets, summaries)
    assert floor is not None and "32.9 vs 25.0 µs/req = 1.32x" in floor
    assert "Pillion / HAProxy 2.22x = Pillion / minimal 1.69x x minimal / HAProxy 1.32x" in floor
    text = report.render_markdown(_meta(), targets, summaries, rat, verdicts)
    header = next(line for line in text.splitlines() if line.startswith("| Metric |"))
    assert header == "| Metric | pillion/haproxy | pillion/nginx | pillion/minimal |"
    assert "minimal/haproxy" not in header
    assert f"- **INFO** {floor}." in text
    assert text.count("- **PASS**") + text.count("- **FAIL**") == 3
    doc = json.loads(report.to_json(_meta(), targets, summaries, rat, verdicts))
    assert doc["floor"] == floor and "minimal/haproxy" in doc["ratios"]


def test_a_missing_or_failed_minimal_row_does_not_break_the_report() -> None:
    without = _targets(pillion_cpu_s=8.0, pillion_hey_p99=600, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in without.items()}
    rat = report.ratios(summaries)
    assert "pillion/minimal" not in rat and report.floor_line(without, summaries) is None
    text = report.render_markdown(_meta(), without, summaries, rat, report.bars(without, summaries))
    assert "pillion/minimal" not in text and "**INFO**" not in text

    failed = _with_minimal(cpu_s=5.0)
    failed["minimal"] = report.TargetReport(
        "minimal", "minimal", error="exited\n--- log tail ---\nImportError"
    )
    summaries = {k: report.summarize(t) for k, t in failed.items()}
    rat = report.ratios(summaries)
    assert set(rat["pillion/minimal"].values()) == {None}
    verdicts = report.bars(failed, summaries)
    assert verdicts == report.bars(without, summaries)
    floor = report.floor_line(failed, summaries)
    assert floor is not None and "- (minimal row FAILED)" in floor
    text = report.render_markdown(_meta(), failed, summaries, rat, verdicts)
    assert "| pillion/minimal |" in text and "ImportError" in text and f"- **INFO** {floor}." in text
    json.loads(report.to_json(_meta(), failed, summaries, rat, verdicts))


def test_minimal_target_is_a_default_target_started_with_the_given_python() -> None:
    keys = list(servers.LABELS)
    assert keys.index("nginx") + 1 == keys.index("minimal") == keys.index("pillion") - 1
    assert "minimal" in servers.TARGET_KEYS
    argv = servers.minimal_argv("/venv/bin/python", 8000, 7000)
    assert argv[0] == "/venv/bin/python" and argv[2:] == ["8000", "7000"]
    assert Path(argv[1]).name == "minimal_proxy.py" and Path(argv[1]).is_file()
    assert "minimal" in run.parse_args([]).only
    assert run.parse_args(["--only", "minimal,haproxy"]).only == ("upstream", "haproxy", "minimal")


def test_pillion_errors_fail_the_bars() -> None:
    targets = _targets(4.0, 500, 1024)
    bad = targets["pillion"].rounds[0]
    targets["pillion"].rounds[0] = report.Measurement(
        **{
            **bad.__dict__,
            "wrk": loadgen.WrkResult(bad.wrk.requests, 8.0, bad.wrk.rps, bad.wrk.percentiles_us, {}, 9),
        }
    )
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    assert not any(b.passed for b in report.bars(targets, summaries))


def test_stop_all_leaves_no_child_and_accounting_reads_proc(tmp_path: Path) -> None:
    group = procs.ProcGroup()
    proc = group.spawn("sleeper", ["sleep", "30"], tmp_path / "log", cpu=None)
    assert proc.alive() and procs.tree(proc.pid) == [proc.pid]
    group.stop_all()
    assert not proc.alive()
    me = procs.cpu_sample(os.getpid())
    assert me.ticks >= 0 and os.getpid() in me.pids and procs.rss_kib(os.getpid()) > 0


def test_log_tail_collapses_repeats_and_shortens_long_lines(tmp_path: Path) -> None:
    group = procs.ProcGroup()
    log = tmp_path / "log"
    proc = group.spawn("true", ["true"], log, cpu=None)
    proc.popen.wait()
    log.write_text(
        "".join(f'{{"ts": "2026-01-01T00:00:0{i}.000Z", "msg": "same"}}\n' for i in range(5))
        + "x" * 1000
        + "END\n"
    )
    tail = proc.tail()
    assert "5 times" in tail and tail.endswith("END") and len(tail) < 800
    group.stop_all()


SLOWLORIS_OUT = """ready 500
{"connections": 500, "opened": 1000, "closed_by_server": 500, "eof": 490, "reset": 10, "connect_failed": 0, \
"lifetime_s": {"min": 2.01, "median": 2.5, "max": 2.98}, "max_open": 500, "still_open": 500, \
"oldest_open_s": 2.4, "reply_bytes": 0, "reply_sample": ""}
"""


def test_slowloris_statistics_and_labelled_counters_are_parsed() -> None:
    r = loadgen.parse_slowloris(SLOWLORIS_OUT)
    assert (r.opened, r.closed_by_server, r.eof, r.reset, r.max_open) == (1000, 500, 490, 10, 500)
    assert (r.lifetime_min_s, r.lifetime_max_s, r.oldest_open_s) == (2.01, 2.98, 2.4)
    with pytest.raises(ValueError):
        loadgen.parse_slowloris("ready 500\nTraceback ...\n")
    argv = loadgen.slowloris_argv("/venv/bin/python", 8000, 500, 45)
    assert argv[0] == "/venv/bin/python" and Path(argv[1]).is_file()
    assert argv[2:] == ["8000", "--connections", "500", "--duration", "45"]
    text = (
        'pillion_downstream_timeouts_total{listener="inbound",timeout="request_headers"} 7\n'
        'pillion_downstream_timeouts_total{listener="inbound",timeout="idle"} 3\n'
    )
    assert loadgen.labelled_total(text, "pillion_downstream_timeouts_total", timeout="request_headers") == 7
    assert loadgen.labelled_total(text, "pillion_downstream_timeouts_total") == 10
    assert loadgen.labelled_total(text, "pillion_downstream_timeouts_total", timeout="request") is None


def _slowloris(
    *,
    attacked_p99: float,
    errors: int = 0,
    lifetime_max: float = 2.98,
    baselines: tuple[float, ...] = (1000.0, 1000.0, 1000.0),  # one round each
) -> report.SlowlorisReport:
    r = report.SlowlorisReport(500, 2.0)
    stats = loadgen.parse_slowloris(SLOWLORIS_OUT)
    stats = loadgen.SlowlorisResult(**{**stats.__dict__, "lifetime_max_s": lifetime_max})
    for rnd, base_p99 in enumerate(baselines, 1):
        base = loadgen.HeyResult(2000.0, {50: 400.0, 99: base_p99}, {200: 10000}, 0)
        hit = loadgen.HeyResult(2000.0, {50: 400.0, 99: attacked_p99}, {200: 10000 - errors, 502: errors}, 0)
        r.rounds.append(report.SlowlorisRound(rnd, "baseline first", base, hit, stats, 0.5, 0.6, 40.0, 500.0))
    return r


def test_the_slowloris_bar_needs_latency_success_and_closed_connections() -> None:
    ok = report.slowloris_bar(_slowloris(attacked_p99=1900.0))
    assert ok.passed and "1.9 ms under attack vs 1.0 ms without = 1.90x" in ok.detail
    assert "1,500 slow connections closed by Pillion 2.0..3.0 s" in ok.detail
    assert not report.slowloris_bar(_slowloris(attacked_p99=2100.0)).passed
    errors = report.slowloris_bar(_slowloris(attacked_p99=1000.0, errors=3))
    assert not errors.passed and "9 errors/non-2xx" in errors.detail
    late = report.slowloris_bar(_slowloris(attacked_p99=1000.0, lifetime_max=4.5))
    assert not late.passed and "lived 4.50 s (limit 4 s)" in late.detail
    failed = report.SlowlorisReport(500, 2.0, error="round 1: the slowloris attacker exited 1")
    assert not report.slowloris_bar(failed).passed


def test_rounds_whose_slowloris_baseline_stalled_are_left_out_of_the_bar() -> None:
    # The machine pauses during round 3's baseline. Counted, it would lift the baseline's median from
    # 1.05 to 1.1 ms and pass the attack at 1.95x; without it the attack costs 2.05x.
    r = _slowloris(attacked_p99=2150.0, baselines=(1000.0, 1000.0, 6000.0, 1100.0, 1200.0))
    bar = report.slowloris_bar(r)
    assert not bar.passed
    assert bar.detail.startswith(
        "@2k: 2.1 ms under attack vs 1.1 ms without = 2.05x (limit 2x; "
        "round 3 left out: the baseline's p99@2k stalled (6.0 ms > 4 ms)); 2,500 slow connections closed"
    )
    assert r.summary()["p99_ratio"] == pytest.approx(2150 / 1100)  # the section's table keeps every round
    text = report.render_markdown(_meta(), {}, {}, {}, [bar], slowloris=r)
    assert "round 3 (baseline first) 6.0 ms / 2.1 ms (left out of the bar); round 4" in text
    doc = json.loads(report.to_json(_meta(), {}, {}, {}, [bar], slowloris=r))
    assert doc["slowloris"]["p99_ratio_rounds_counted"] == [1, 2, 4, 5]
    # stalls in three of five rounds: too few left, so the bar fails, though the raw ratio (0.43x) passes
    r = _slowloris(attacked_p99=2150.0, baselines=(1000.0, 9000.0, 8000.0, 5000.0, 1200.0))
    bar = report.slowloris_bar(r)
    assert not bar.passed
    assert bar.detail.startswith("NOT MEASURED: 2 of 5 rounds counted, fewer than 3; @2k: 2.1 ms under")
    assert (
        "rounds 2, 3, 4 left out: the baseline's p99@2k stalled (9.0 ms, 8.0 ms, 5.0 ms > 4 ms)" in bar.detail
    )
    # 4 ms itself still counts: a p99 at the threshold is slow, not a stall
    r = _slowloris(attacked_p99=2150.0, baselines=(1000.0, report.STALL_US, 8000.0, 5000.0, 1200.0))
    bar = report.slowloris_bar(r)
    assert bar.passed and bar.detail.startswith("@2k: 2.1 ms under attack vs 1.2 ms without = 1.79x")


def test_the_slowloris_run_is_rendered_and_in_the_json() -> None:
    targets = _targets(pillion_cpu_s=4.0, pillion_hey_p99=500, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    slow = _slowloris(attacked_p99=1500.0)
    verdicts = report.bars(targets, summaries, slow)
    assert len(verdicts) == 4 and verdicts[-1].passed and "slowloris" in verdicts[-1].name
    rat = report.ratios(summaries)
    text = report.render_markdown(_meta(), targets, summaries, rat, verdicts, slowloris=slow)
    assert "## Slowloris (Pillion under 500 slow connections)" in text
    assert "| ratio (under attack / baseline) | 1.00x | 1.50x |" in text
    assert "rose by 500/500/500 per round" in text
    doc = json.loads(report.to_json(_meta(), targets, summaries, rat, verdicts, slowloris=slow))
    assert doc["slowloris"]["median"]["p99_ratio"] == pytest.approx(1.5)
    assert "Slowloris" not in report.render_markdown(_meta(), targets, summaries, rat, verdicts[:3])
    assert run.parse_args([]).slowloris_rounds == 5 and run.parse_args(["--quick"]).slowloris_rounds == 1


def _svid(tmp_path: Path, name: str) -> servers.Svid:
    d = tmp_path / name
    return servers.Svid(d / "cert.pem", d / "key.pem", d / "bundle.pem", tmp_path / f"{name}.pem")


def test_the_mtls_pairs_are_configured_for_the_same_hop(tmp_path: Path) -> None:
    a, b = _svid(tmp_path, "a"), _svid(tmp_path, "b")
    identity_a = {"cert": str(a.cert), "key": str(a.key), "trust_bundle": str(a.bundle)}
    client = yaml.safe_load(servers.pillion_mtls_client_yaml(8000, 9901, 8001, a))
    assert client["identity"] == identity_a
    assert client["listeners"] == [
        {
            "name": "outbound",
            "address": "127.0.0.1:8000",
            "protocol": "http",
            "direction": "outbound",
            "routes": [{"match": {"prefix": "/"}, "cluster": "b"}],
        }
    ]
    assert client["clusters"] == [
        {
            "name": "b",
            "endpoints": ["127.0.0.1:8001"],
            "connect_timeout": "1s",
            "tls": {"mode": "mesh", "peer": "spiffe://bench.local/ns/bench/sa/b"},
        }
    ]
    server = yaml.safe_load(servers.pillion_mtls_server_yaml(8001, 9902, 7000, b))
    assert server["identity"]["cert"] == str(b.cert)
    assert server["listeners"][0]["tls"] == {"mode": "strict"}
    assert server["listeners"][0]["address"] == "127.0.0.1:8001"
    assert server["clusters"] == [{"name": "app", "endpoints": ["127.0.0.1:7000"], "connect_timeout": "1s"}]
    assert client["access_log"] == server["access_log"] == {"enabled": False}

    hap_a = servers.haproxy_mtls_client_cfg(8000, 8001, a)
    hap_b = servers.haproxy_mtls_server_cfg(8001, 7000, b)
    for cfg in (hap_a, hap_b):
        for directive in (
            "nbthread 1",
            "http-reuse always",
            "option http-keep-alive",
            "ssl-default-bind-options ssl-min-ver TLSv1.2",
            "ssl-default-server-options ssl-min-ver TLSv1.2",
            "ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20",
            "ssl-default-server-ciphers ECDHE+AESGCM:ECDHE+CHACHA20",
        ):
            assert directive in cfg
        assert cfg.index("ssl-default-bind-options") < cfg.index("defaults")  # in `global`
    assert f"server b1 127.0.0.1:8001 ssl verify required ca-file {a.bundle} crt {a.combined}\n" in hap_a
    assert "bind 127.0.0.1:8000\n" in hap_a
    assert f"bind 127.0.0.1:8001 ssl crt {b.combined} ca-file {b.bundle} verify required\n" in hap_b
    assert "server app1 127.0.0.1:7000\n" in hap_b
    assert servers.HAPROXY_COMMON == servers.HAPROXY_GLOBAL + servers.HAPROXY_DEFAULTS
    assert "__xfcc" in servers.upstream_conf(tmp_path, 7000)
    pair = servers.Pair(
        "pillion-mtls", servers.Target("pillion-mtls-a", 1), servers.Target("pillion-mtls-b", 2)
    )
    assert pair.url == "http://127.0.0.1:1/" and "originates" in pair.client.label and "Pillion" in pair.label


def test_the_identities_come_from_the_pillion_cli(tmp_path: Path) -> None:
    pillion = Path(sys.executable).with_name("pillion")
    if not pillion.is_file():
        pytest.skip("no pillion script next to the interpreter")
    ids = servers.make_identities(tmp_path, str(pillion))
    for svid in (ids.a, ids.b):
        assert svid.combined.read_text() == svid.cert.read_text() + svid.key.read_text()
        assert svid.combined.stat().st_mode & 0o077 == 0  # it holds the key
    ids.client_context()  # A's certificate and key load and match
    with pytest.raises(RuntimeError, match="exited 1"):
        servers.make_identities(tmp_path, str(pillion))  # `ca init` refuses to replace the CA


def test_mtls_options_and_only() -> None:
    s = run.parse_args([])
    assert s.mtls_pairs == servers.MTLS_KEYS and s.mtls_rounds == 5 and s.rounds == 5
    assert (s.mtls_duration, s.mtls_rate_duration, run.mtls_rate(s)) == (4, 5, 1000)
    q = run.parse_args(["--quick"])
    assert (q.mtls_rounds, q.mtls_duration, q.mtls_rate_duration) == (1, 2, 2)
    only = run.parse_args(["--only", "haproxy,pillion-mtls", "--mtls-rounds", "2"])
    assert only.only == ("upstream", "haproxy") and only.mtls_pairs == ("pillion-mtls",)
    assert only.mtls_rounds == 2
    assert run.parse_args(["--only", "pillion"]).mtls_pairs == ()


def _visit(
    rnd: int, *, a_cpu_s: float, b_cpu_s: float, hey_p99: float, errors: int = 0, requests: int = 40000
) -> report.PairVisit:
    wrk = loadgen.WrkResult(requests, 4.0, requests / 4, {50: 3000.0, 99: 9000.0}, {}, errors)
    hey = loadgen.HeyResult(1000.0, {50: 400.0, 99: hey_p99}, {200: 5000}, 0)
    return report.PairVisit(
        round=rnd,
        slot=0,
        wrk=wrk,
        client_cpu_s=a_cpu_s,
        server_cpu_s=b_cpu_s,
        upstream_cpu_s=0.4,
        client_rss_kib=40 * 1024,
        server_rss_kib=41 * 1024,
        server_core_busy_pct=100.0,
        load_core_busy_pct=60.0,
        outside_pct=1.0,
        hey=hey,
        hey_client_cpu_s=0.5,
        hey_server_cpu_s=0.25,
        upstream_conns_opened=0,
    )


def _mtls(
    *,
    pillion_a_s: float = 2.0,
    pillion_b_s: float = 1.6,
    pillion_p99: float = 1300.0,
    haproxy: bool = True,
    minimal: bool = False,
) -> report.MtlsReport:
    keys = ("pillion-mtls", *(["haproxy-mtls"] if haproxy else []), *(["minimal-mtls"] if minimal else []))
    r = report.MtlsReport(1000.0, {k: report.MtlsPair(k, servers.MTLS_LABELS[k]) for k in keys})
    for rnd, direct_p99 in ((1, 500.0), (2, 600.0), (3, 400.0)):
        this = report.MtlsRound(rnd, ["direct", *keys])
        this.direct = loadgen.HeyResult(1000.0, {50: 200.0, 99: direct_p99}, {200: 5000}, 0)
        this.pairs["pillion-mtls"] = _visit(
            rnd, a_cpu_s=pillion_a_s, b_cpu_s=pillion_b_s, hey_p99=pillion_p99
        )
        if haproxy:
            this.pairs["haproxy-mtls"] = _visit(rnd, a_cpu_s=1.6, b_cpu_s=1.2, hey_p99=900.0)
        if minimal:
            this.pairs["minimal-mtls"] = _visit(
                rnd, a_cpu_s=2.0, b_cpu_s=1.5, hey_p99=direct_p99 + 1000 + rnd
            )
        r.rounds.append(this)
    # one bad round must not move a median
    r.rounds[1].pairs["pillion-mtls"] = _visit(2, a_cpu_s=20.0, b_cpu_s=20.0, hey_p99=9000.0)
    return r


def test_mtls_medians_added_latency_ratios_and_bars() -> None:
    r = _mtls()
    p = r.summary("pillion-mtls")
    assert p["client_cpu_us_per_req"] == pytest.approx(50.0)  # 2.0 s / 40k requests
    assert p["server_cpu_us_per_req"] == pytest.approx(40.0)
    assert p["hey_client_cpu_us_per_req"] == pytest.approx(100.0)  # 0.5 s / 5000 responses
    # per round: 1300-500, 9000-600, 1300-400 -> median 900 (not the difference of the medians, 800)
    assert [x.added_p99_us("pillion-mtls") for x in r.rounds] == [800.0, 8400.0, 900.0]
    assert p["added_p99_us"] == pytest.approx(900.0)
    assert r.direct_summary()["hey_p99_us"] == 500.0
    rat = r.ratios()
    assert rat["client_cpu_us_per_req"] == pytest.approx(50 / 40)
    assert rat["server_cpu_us_per_req"] == pytest.approx(40 / 30)
    cpu, latency = report.mtls_bars(r)
    assert cpu.passed and "A: 50.0 vs 40.0 µs/req = 1.25x; B: 40.0 vs 30.0 µs/req = 1.33x" in cpu.detail
    assert latency.passed and "+0.9 ms (p99 1.3 ms through the pair vs 0.5 ms direct" in latency.detail
    assert "HAProxy pair (reference): +0.4 ms" in latency.detail

    # either side over 1.5x fails the CPU bar; over 1 ms added fails the latency bar
    assert not report.mtls_bars(_mtls(pillion_b_s=1.2 * 1.51))[0].passed
    assert not report.mtls_bars(_mtls(pillion_a_s=1.6 * 1.51))[0].passed
    assert not report.mtls_bars(_mtls(pillion_p99=1600.0))[1].passed
    # without the HAProxy pair there is nothing to compare CPU with; the latency bar stands alone
    alone = report.mtls_bars(_mtls(haproxy=False))
    assert not alone[0].passed and "not part of the run" in alone[0].detail and alone[1].passed


def _stalled(direct_p99: float) -> loadgen.HeyResult:
    return loadgen.HeyResult(1000.0, {50: 300.0, 99: direct_p99}, {200: 5000}, 0)


def test_rounds_whose_direct_call_stalled_are_left_out_of_the_added_p99() -> None:
    r = _mtls(minimal=True)
    for rnd, through in ((4, 1500.0), (5, 1600.0)):  # five rounds, as the bench runs them
        this = report.MtlsRound(rnd, r.rounds[0].order, r.rounds[0].direct, dict(r.rounds[0].pairs))
        this.pairs["pillion-mtls"] = _visit(rnd, a_cpu_s=2.0, b_cpu_s=1.6, hey_p99=through)
        r.rounds.append(this)
    # per round 800, 8400, 900, 1000, 1100: median 1000
    assert len(r.clean_rounds) == 5 and r.summary("pillion-mtls")["added_p99_us"] == pytest.approx(1000.0)
    assert report.mtls_bars(r)[1].passed
    # the machine pauses during round 3's direct call: 1300 - 12800 would be a -11.5 ms "gain", and
    # counted, it would pull the median down to 900 and pass the bar
    r.rounds[2].direct = _stalled(12800.0)
    assert r.guard.counted == [1, 2, 4, 5]
    assert r.summary("pillion-mtls")["added_p99_us"] == pytest.approx(1050.0)  # 800, 8400, 1000, 1100
    latency = report.mtls_bars(r)[1]
    assert not latency.passed and "+1.1 ms" in latency.detail  # 1050 µs, over the limit
    assert "median of per-round differences over 4 rounds; round 3 left out: " in latency.detail
    assert "the direct call stalled (p99 12.8 ms > 2 ms)" in latency.detail
    assert report.mtls_floor_line(r) is not None
    assert "(per round +1.0 ms, +1.0 ms, +1.0 ms, +1.0 ms; round 3 left out" in str(report.mtls_floor_line(r))
    text = report.render_markdown(_meta(), {}, {}, {}, [], mtls=r)
    assert "direct 12.8 ms (left out of the added p99)" in text
    doc = json.loads(report.to_json(_meta(), {}, {}, {}, [], mtls=r))
    assert doc["mtls"]["added_p99_rounds_counted"] == [1, 2, 4, 5]
    # stalls in three of five rounds: too few rounds left, so the bar fails, whatever the differences say
    r.rounds[0].direct = _stalled(10000.0)
    r.rounds[3].direct = None  # a direct call that failed is not a stall, but it does not count either
    assert len(r.clean_rounds) == 2
    latency = report.mtls_bars(r)[1]
    assert not latency.passed
    assert latency.detail.startswith("NOT MEASURED: 2 of 5 rounds counted, fewer than 3; ")
    assert "rounds 1, 3 left out: the direct call stalled" in latency.detail
    assert "round 4 left out: the direct call failed" in latency.detail
    # 2 ms itself still counts: a p99 at the threshold is slow, not a stall
    r.rounds[0].direct = _stalled(report.DIRECT_STALL_US)
    assert 1 in r.guard.counted and report.mtls_bars(r)[1].detail.startswith("@1k: ")


def test_a_shorter_mtls_run_needs_all_its_rounds_clean() -> None:
    r = _mtls()
    del r.rounds[1:]  # `--quick`: one round
    assert r.guard.needed == 1 and report.mtls_bars(r)[1].passed
    r.rounds[0].direct = _stalled(5000.0)
    assert report.mtls_bars(r)[1].detail.startswith("NOT MEASURED: 0 of 1 rounds counted, fewer than 1; ")


def test_the_minimal_mtls_pair_is_an_informational_line_and_never_a_bar() -> None:
    r = _mtls(minimal=True)
    assert [(b.passed, b.detail) for b in report.mtls_bars(r)] == [
        (b.passed, b.detail) for b in report.mtls_bars(_mtls())
    ]
    line = report.mtls_floor_line(r)
    assert line is not None and line.startswith("minimal uvloop+httptools pair, A -> mTLS -> B (calibration")
    assert "adds +1.0 ms p99 @1k (per round +1.0 ms, +1.0 ms, +1.0 ms)" in line
    assert "Pillion pair +0.9 ms; HAProxy pair +0.4 ms" in line
    assert "A 50.0 vs 40.0 = 1.25x, B 37.5 vs 30.0 = 1.25x" in line
    targets = _targets(pillion_cpu_s=4.0, pillion_hey_p99=500, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    verdicts = report.bars(targets, summaries, None, r)
    assert len(verdicts) == 5  # the calibration pair adds no bar
    text = report.render_markdown(_meta(), targets, summaries, report.ratios(summaries), verdicts, mtls=r)
    assert (
        f"- **INFO** {line}." in text
        and "| minimal uvloop+httptools pair (A -> mTLS -> B, calibration) |" in text
    )
    doc = json.loads(report.to_json(_meta(), targets, summaries, report.ratios(summaries), verdicts, mtls=r))
    assert doc["mtls_floor"] == line and doc["mtls"]["added_p99_us_per_round"]["minimal-mtls"] == [
        1001,
        1002,
        1003,
    ]

    assert report.mtls_floor_line(None) is None and report.mtls_floor_line(_mtls()) is None
    failed = _mtls(minimal=True)
    failed.pairs["minimal-mtls"].error = "A exited (status 2)"
    assert report.mtls_floor_line(failed) == (
        "minimal uvloop+httptools pair, A -> mTLS -> B (calibration, informational, not a bar): "
        "- (minimal pair FAILED: A exited (status 2))"
    )


def test_the_minimal_proxy_takes_mutual_tls_on_either_side(tmp_path: Path) -> None:
    svid = servers.Svid(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "b.pem", tmp_path / "ck.pem")
    b = servers.minimal_argv("/py", 8001, 7000, tls_in=svid)
    assert b[2:] == ["8001", "7000", "--tls-in", *(str(tmp_path / f) for f in ("c.pem", "k.pem", "b.pem"))]
    a = servers.minimal_argv("/py", 8000, 8001, tls_out=svid)
    assert a[4] == "--tls-out" and len(a) == 8
    assert "minimal-mtls" in servers.MTLS_KEYS and "minimal-mtls" in run.parse_args([]).mtls_pairs
    # and the proxy reads back what the harness writes
    assert minimal_proxy.parse_argv(a[2:]) == (
        8000,
        8001,
        {"--tls-out": [str(svid.cert), str(svid.key), str(svid.bundle)]},
    )
    assert minimal_proxy.parse_argv(["8000", "7000"]) == (8000, 7000, {})
    for bad in (
        ["8000"],
        ["8000", "7000", "--tls-in", "c", "k"],
        ["8000", "7000", "-v"],
        ["8000", "--tls-in"],
    ):
        with pytest.raises(SystemExit):
            minimal_proxy.parse_argv(bad)


def test_a_failed_or_erroring_pillion_pair_fails_both_mtls_bars() -> None:
    failed = _mtls()
    failed.pairs["pillion-mtls"].error = "B exited (status 1)\n--- log tail ---\nTraceback"
    assert [b.passed for b in report.mtls_bars(failed)] == [False, False]
    assert "Pillion pair FAILED: B exited" in report.mtls_bars(failed)[0].detail
    erring = _mtls()
    erring.rounds[0].pairs["pillion-mtls"] = _visit(1, a_cpu_s=2.0, b_cpu_s=1.6, hey_p99=1300.0, errors=5)
    assert not any(b.passed for b in report.mtls_bars(erring))
    empty = report.MtlsReport(1000.0, {"pillion-mtls": report.MtlsPair("pillion-mtls", "P")}, error="not run")
    assert [b.passed for b in report.mtls_bars(empty)] == [False, False]


def test_the_mtls_run_is_rendered_and_in_the_json() -> None:
    targets = _targets(pillion_cpu_s=4.0, pillion_hey_p99=500, pillion_rss=20 * 1024)
    summaries = {k: report.summarize(t) for k, t in targets.items()}
    r = _mtls()
    r.pairs["haproxy-mtls"].error = None
    r.pairs["pillion-mtls"].xfcc_seen = "By=spiffe://bench.local/ns/bench/sa/b;Hash=ab;URI=spiffe://x/a"
    verdicts = report.bars(targets, summaries, None, r)
    assert len(verdicts) == 5 and "mTLS" in verdicts[3].name and "mTLS" in verdicts[4].name
    rat = report.ratios(summaries)
    text = report.render_markdown(_meta(), targets, summaries, rat, verdicts, mtls=r)
    assert "## mTLS between two sidecars" in text
    assert "| direct (upstream, no proxy) | - |" in text
    assert "| Pillion pair (A -> mTLS -> B) | 10,000 | 9.000 ms | 50.0 | 40.0 | 100.0 | 50.0 |" in text
    assert "| ratio Pillion / HAProxy | 1.00x |  | 1.25x | 1.33x |" in text
    assert "x-forwarded-client-cert `By=spiffe://bench.local" in text
    assert "no x-forwarded-client-cert (not added by this proxy)" in text
    doc = json.loads(report.to_json(_meta(), targets, summaries, rat, verdicts, mtls=r))
    assert doc["mtls"]["median"]["pillion-mtls"]["added_p99_us"] == pytest.approx(900.0)
    assert doc["mtls"]["added_p99_us_per_round"]["haproxy-mtls"] == [400.0, 300.0, 500.0]
    assert doc["mtls"]["ratios"]["pillion-mtls/haproxy-mtls"]["client_cpu_us_per_req"] == pytest.approx(1.25)
    assert "mTLS" not in report.render_markdown(_meta(), targets, summaries, rat, verdicts[:3])

    failed = _mtls()
    failed.pairs["haproxy-mtls"].error = "haproxy exited\n--- HAProxy B log tail ---\n[ALERT] no crt"
    text = report.render_markdown(
        _meta(), targets, summaries, rat, report.bars(targets, summaries, None, failed), mtls=failed
    )
    assert "[ALERT] no crt" in text and "**FAILED**" in text
