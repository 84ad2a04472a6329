#!/usr/bin/env python3
"""Markdown table of docs/bench-run.sh results (JSON lines), one row per run
(and per step for the throughput scenario):

    python3 docs/bench-summary.py [artifacts/bench/peers.jsonl]

Columns: connections opened, connect rate, server RSS per connection (KiB, after connecting
and holding), server CPU per delivery and per publication (µs, publish phase,
drain included), Redis CPU per publication (µs, whole run), deliveries/s,
latency p50/p99/p99.9 (ms, publication → receipt), lost and duplicated.
"""

import json
import sys


def fmt(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def per(total_secs, n):
    return total_secs * 1e6 / n if total_secs is not None and n else None


def rows(run):
    conns = run.get("connections", {})
    opened = f"{conns.get('opened', 0):,}/{conns.get('requested', 0):,}"
    rss = (run.get("server") or {}).get("rss_per_conn_kib")
    redis = run.get("redis_cpu_secs")
    published = run.get("published") or 0
    base = [
        run.get("scenario", "?"),
        run.get("target", "?"),
        str(run.get("round", "")),
        opened,
        fmt(conns.get("connect_rate"), 0),
        fmt(rss, 2),
    ]
    steps = run.get("steps")
    if not steps:
        lat = run.get("latency_ms") or {}
        cpu = run.get("server_cpu_secs")
        yield base + [
            "",
            fmt(run.get("server_cpu_us_per_delivery"), 2),
            fmt(per(cpu, published), 1),
            fmt(per(redis, published), 1),
            fmt(run.get("deliveries_per_sec"), 0) if published else "–",
            fmt(lat.get("p50"), 2),
            fmt(lat.get("p99"), 2),
            fmt(lat.get("p999"), 2),
            fmt(run.get("lost")) if published else "–",
            fmt(run.get("duplicated")) if published else "–",
        ]
        return
    for step in steps:
        lat = step.get("latency_ms") or {}
        cpu = step.get("server_cpu_secs")
        yield base + [
            f"{step.get('rate', 0):g}/s",
            fmt(step.get("server_cpu_us_per_delivery"), 2),
            fmt(per(cpu, step.get("published")), 1),
            "",  # Redis CPU is measured per run, not per step
            fmt(step.get("deliveries_per_sec"), 0),
            fmt(lat.get("p50"), 2),
            fmt(lat.get("p99"), 2),
            fmt(lat.get("p999"), 2),
            fmt(step.get("lost")),
            "",
        ]
    yield base + ["all", "", "", fmt(per(redis, published), 1), "", "", "", "", fmt(run.get("lost")), fmt(run.get("duplicated"))]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "artifacts/bench/peers.jsonl"
    header = [
        "scenario", "target", "round", "connections", "connect/s", "RSS/conn KiB", "step",
        "server µs/delivery", "server µs/publication", "Redis µs/publication",
        "deliveries/s", "p50 ms", "p99 ms", "p99.9 ms", "lost", "dup",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            run = json.loads(line)
            if "error" in run:
                cells = [run.get("scenario", "?"), run.get("target", "?"), str(run.get("round", "")), run["error"]]
                print("| " + " | ".join(cells + [""] * (len(header) - len(cells))) + " |")
                continue
            for cells in rows(run):
                print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
