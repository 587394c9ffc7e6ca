"""Paired A/B of Pillion builds through the mTLS pair, at hey's bursts, interleaved so noise hits all alike.

`python bench/ab.py [--rounds 5] [--seconds 5] [--haproxy] [--burst 8 --rate 125] NAME=DIR ...`, where
each DIR is a directory put first on PYTHONPATH for that pair (a compiled build: `pip install --no-deps
-t DIR .`, as the Makefile makes `.compiled/`), prints a markdown table: per target the medians over
rounds of the latency percentiles, the added p99 over the direct call, and each sidecar's CPU per
request. `--burst`/`--rate` change the load's shape (`--burst 1 --rate 1000`: one request a millisecond
per target, arrivals spread instead of hey's bursts).

Theory of operation: the set-up is `make bench`'s mTLS row (bench/README.md), so a change measured here
is the change that row would see: one nginx upstream, then for each NAME an A -> mTLS -> B pair of
`pillion run` processes (and with `--haproxy`, HAProxy's pair), all on the server core. Each round runs
bench/burst.py once, on the load core, against the direct upstream and every pair: 8 requests at once
every 8 ms per target (about 1000 req/s each, like the row's `hey -c 8 -q 125`), the targets' bursts
offset within each period. A noise spell of the machine therefore falls on all targets of the round,
instead of on whichever ran during it, which is what made the row's own @1k figures move by 25% between
rounds. CPU per request is each sidecar's utime+stime over the round divided by its requests; since
the targets share the round, a sidecar is charged only for its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from loadgen import wrk_argv
from procs import CpuSample, ProcGroup, cpu_sample
from servers import Identities, Pair, make_identities, start_haproxy_pair, start_pillion_pair, start_upstream

BENCH = Path(__file__).resolve().parent
PILLION = str(BENCH.parent / ".venv" / "bin" / "pillion")
FIELDS = ("p50_us", "p90_us", "p99_us", "mean_us")


def parse_builds(specs: list[str]) -> list[tuple[str, Path]]:
    """NAME=DIR pairs, in order; ValueError for a malformed one, a repeated name or a missing directory."""
    builds: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise ValueError(f"{spec!r}: expected NAME=DIR")
        if name in ("direct", "haproxy") or name in (n for n, _ in builds):
            raise ValueError(f"{spec!r}: the name {name!r} is taken")
        path = Path(where)
        if not path.is_dir():
            raise ValueError(f"{spec!r}: {where} is not a directory")
        builds.append((name, path))
    return builds


def table(rounds: list[dict[str, dict[str, float]]]) -> str:
    """The markdown report of `rounds` (each: target name -> its burst.py stats, plus `a_us`/`b_us` CPU
    per request for a pair). Medians over rounds; added p99 is the median of per-round differences."""
    names = list(rounds[0])
    lines = [
        "| target | p50 µs | p90 µs | p99 µs | mean µs | added p99 µs | A CPU µs/req | B CPU µs/req "
        "| failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = [r[name] for r in rounds]
        med = {f: statistics.median(x[f] for x in runs) for f in FIELDS}
        added = statistics.median(
            x["p99_us"] - r["direct"]["p99_us"] for x, r in zip(runs, rounds, strict=True)
        )
        cpu = [
            f"{statistics.median(x[k] for x in runs):.1f}" if k in runs[0] else "-" for k in ("a_us", "b_us")
        ]
        failed = sum(int(x["failed"]) for x in runs)
        lines.append(
            f"| {name} | {med['p50_us']:.0f} | {med['p90_us']:.0f} | {med['p99_us']:.0f} | "
            f"{med['mean_us']:.0f} | {'-' if name == 'direct' else f'{added:+.0f}'} | {cpu[0]} | {cpu[1]} "
            f"| {failed} |"
        )
    return "\n".join(lines)


def _start_pair(
    group: ProcGroup,
    tmp: Path,
    ids: Identities,
    name: str,
    build: Path | None,
    *,
    upstream_port: int,
    cpu: int,
) -> Pair:
    root = tmp / name
    root.mkdir()
    if build is None:
        pair = start_haproxy_pair(group, root, cpu, upstream_port, 15.0, ids=ids)
    else:
        env = dict(os.environ, PYTHONPATH=str(build.resolve()))  # this build for both `pillion run`s
        pair = start_pillion_pair(group, root, cpu, upstream_port, 15.0, pillion=PILLION, ids=ids, env=env)
    if pair.error is not None or pair.client.proc is None or pair.server.proc is None:
        raise RuntimeError(f"{name}: {pair.error}")
    return pair


def _cpu(pair: Pair) -> tuple[CpuSample, CpuSample]:
    """A's and B's CPU so far."""
    assert pair.client.proc is not None and pair.server.proc is not None  # (checked in _start_pair)
    return cpu_sample(pair.client.proc.pid), cpu_sample(pair.server.proc.pid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Paired A/B of Pillion builds through the mTLS pair.")
    p.add_argument("builds", nargs="+", metavar="NAME=DIR", help="a build directory to put on PYTHONPATH")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each round's bursts")
    p.add_argument("--haproxy", action="store_true", help="add HAProxy's mTLS pair as a reference")
    p.add_argument("--burst", type=int, default=8, help="requests at once per target (the row's 8)")
    p.add_argument("--rate", type=float, default=125.0, help="bursts a second per target (the row's 125)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    a = p.parse_args(argv)
    if a.burst < 1 or a.rate <= 0:
        p.error("--burst must be at least 1 and --rate above 0")
    try:
        builds = parse_builds(a.builds)
    except ValueError as exc:
        p.error(str(exc))
    group = ProcGroup()
    try:
        with tempfile.TemporaryDirectory(prefix="pillion-ab-") as tmp_name:
            tmp = Path(tmp_name)
            upstream = start_upstream(group, tmp, a.server_cpu, 15.0)
            ids = make_identities(tmp, PILLION)
            pairs: dict[str, Pair] = {}
            for name, build in [*builds, *([("haproxy", None)] if a.haproxy else [])]:
                pairs[name] = _start_pair(
                    group, tmp, ids, name, build, upstream_port=upstream.port, cpu=a.server_cpu
                )
                group.run(wrk_argv(pairs[name].url, 32, 1), a.load_cpu, 30.0)  # warm-up: pools, caches
            ports = {"direct": upstream.port} | {n: pair.client.port for n, pair in pairs.items()}
            rounds: list[dict[str, dict[str, float]]] = []
            for r in range(a.rounds):
                order = list(ports)[1:]
                order = order[r % len(order) :] + order[: r % len(order)]  # who goes first in each period
                targets = ["direct", *order]
                before = {n: _cpu(x) for n, x in pairs.items()}
                argv_ = [
                    sys.executable,
                    str(BENCH / "burst.py"),
                    f"{a.seconds:g}",
                    *("--burst", str(a.burst), "--rate", f"{a.rate:g}"),
                    *(str(ports[t]) for t in targets),
                ]
                done = group.run(argv_, a.load_cpu, a.seconds * 3 + 30)
                if done.returncode != 0:
                    raise RuntimeError(f"burst.py exited {done.returncode}:\n{done.stderr[-2000:]}")
                out = json.loads(done.stdout)
                stats: dict[str, dict[str, float]] = {t: out[str(ports[t])] for t in targets}
                for n, (a0, b0) in before.items():
                    a1, b1 = _cpu(pairs[n])
                    served = max(1.0, stats[n]["requests"])
                    stats[n]["a_us"] = (a1.schedstat_ns - a0.schedstat_ns) / 1e3 / served
                    stats[n]["b_us"] = (b1.schedstat_ns - b0.schedstat_ns) / 1e3 / served
                rounds.append(stats)
                print(
                    f"round {r + 1}: " + "  ".join(f"{t} p99 {stats[t]['p99_us']:.0f} µs" for t in ports),
                    file=sys.stderr,
                    flush=True,
                )
            print(table(rounds))
    finally:
        group.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
