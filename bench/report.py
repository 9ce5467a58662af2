#!/usr/bin/env python3
"""Renders bench/run's results.jsonl as one table plus the target checks, and with --plot
draws the concurrency sweep (req/s and CPU per request against connections, the gateway
beside its baselines) with matplotlib.

Usage: bench/report.py target/bench/run-<timestamp>/results.jsonl [--plot FILE.png]
"""

import argparse
import json
import sys

MIB = 1024 * 1024

# (label, result name, baseline name or None, baseline label)
ROWS = [
    ("baseline: minimal actix handler", "base_static", None, ""),
    ("a  cached GET, HS256", "a_cached_hs256", "base_static", "minimal handler"),
    ("baseline: nginx proxy_cache (HIT)", "base_nginx", None, ""),
    ("a  (same run, other baseline)", "a_cached_hs256", "base_nginx", "nginx proxy_cache"),
    ("baseline: minimal handler, RS256 req", "base_static_rs", None, ""),
    ("b  cached GET, RS256", "b_cached_rs256", "base_static_rs", "minimal handler"),
    ("baseline: a, --against build", "against_a_cached_hs256", None, ""),
    ("a  (same run, against REV)", "a_cached_hs256", "against_a_cached_hs256", "--against build"),
    ("baseline: b, --against build", "against_b_cached_rs256", None, ""),
    ("b  (same run, against REV)", "b_cached_rs256", "against_b_cached_rs256", "--against build"),
    ("baseline: minimal handler, mimalloc", "base_static_mi", None, ""),
    ("a  (same run, other baseline)", "a_cached_hs256", "base_static_mi", "handler on mimalloc"),
    ("baseline: minimal handler, Origin req", "base_static_origin", None, ""),
    ("a' cached GET, CORS configured", "a_cors", "base_static_origin", "minimal handler"),
    ("baseline: a, traces off", "t_off", None, ""),
    ("a  traced, 1 % sampled", "t_1pct", "t_off", "traces off"),
    ("a  traced, 100 % sampled", "t_all", "t_off", "traces off"),
    ("baseline: simulator GET direct", "base_upstream_get", None, ""),
    ("baseline: reqwest forwarder", "base_forward", None, ""),
    ("c  miss GET (cache off)", "c_miss", "base_forward", "forwarder"),
    ("baseline: c, --against build", "against_c_miss", None, ""),
    ("c  (same run, against REV)", "c_miss", "against_c_miss", "--against build"),
    ("baseline: simulator activate", "base_upstream_activate", None, ""),
    ("baseline: forwarder activate", "base_forward_activate", None, ""),
    ("d  POST activation", "d_activate", "base_forward_activate", "forwarder"),
    ("baseline: forwarder activate + insert", "base_forward_activate_ledger", None, ""),
    ("d  (same run, other baseline)", "d_activate", "base_forward_activate_ledger",
     "forwarder + SQLite insert"),
    ("baseline: minimal handler, 16 conns", "lat_base_static", None, ""),
    ("a  cached GET, 16 conns", "lat_a_cached", "lat_base_static", "minimal handler"),
    ("d' activation, in-process limiter", "d_activate_local_limit", None, ""),
    ("d' activation, Redis limiter", "d_activate_redis_limit", "d_activate_local_limit", "in-process limiter"),
    ("e  simulator GET, slow", "e_upstream_slow", None, ""),
    ("e  forwarder, slow upstream", "e_forward_slow", None, ""),
    ("e  miss GET, slow upstream", "e_fanin", "e_forward_slow", "forwarder"),
    ("e2 forwarder, 2 workers", "e2_forward_slow", None, ""),
    ("e2 miss GET, 2 workers", "e2_fanin", "e2_forward_slow", "forwarder, 2 workers"),
    ("f  cache fill, 100k ids", "f_fill", None, ""),
]


def load(path):
    runs, notes = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r["name"] == "note":
                notes[r["key"]] = r["value"]
            else:
                runs.setdefault(r["name"], []).append(r)
    return runs, notes


def median_run(rs):
    """The round whose req/s is the median (lower median for an even count)."""
    rs = sorted(rs, key=lambda r: r["rps"])
    return rs[(len(rs) - 1) // 2]


def ms(us):
    return f"{us / 1000:.2f} ms"


def cpu_per_req(r):
    """Server CPU microseconds per request, when the run recorded it."""
    if not r or not r.get("cpu_us") or not r.get("requests"):
        return None
    return r["cpu_us"] / r["requests"]


def cpu(r):
    v = cpu_per_req(r)
    return f"{v:.1f} us" if v is not None else ""


def paired(runs, name, base, value):
    """Median over rounds of value(row) / value(baseline), each pair from the same round:
    rounds run back to back, so a pair saw the same load from the rest of the machine."""
    by_round = {r["round"]: r for r in runs.get(base, [])}
    ratios = sorted(
        value(r) / value(by_round[r["round"]])
        for r in runs.get(name, [])
        if r["round"] in by_round and value(r) and value(by_round[r["round"]])
    )
    if not ratios:
        return None
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def paired_diff(runs, name, base, value):
    """Median over rounds of value(row) - value(baseline), each pair from the same round."""
    by_round = {r["round"]: r for r in runs.get(base, [])}
    diffs = sorted(
        value(r) - value(by_round[r["round"]])
        for r in runs.get(name, [])
        if r["round"] in by_round
    )
    if not diffs:
        return None
    mid = len(diffs) // 2
    return diffs[mid] if len(diffs) % 2 else (diffs[mid - 1] + diffs[mid]) / 2


# The sweep's lines: (result name, label, style); each gateway row beside its baseline.
SWEEP = [
    ("sweep_a_cached", "gateway, cached read", "C0-o"),
    ("sweep_base_static", "minimal actix handler", "C0--s"),
    ("sweep_c_miss", "gateway, miss (cache off)", "C3-o"),
    ("sweep_base_forward", "reqwest forwarder", "C3--s"),
]


def plot(runs, notes, path):
    """req/s and server CPU per request against wrk connections, one line per SWEEP row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rps_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = set()
    for name, label, style in SWEEP:
        points = sorted((r["conns"], r) for r in runs.get(name, []))
        if not points:
            continue
        conns = [c for c, _ in points]
        drawn.update(conns)
        rps_ax.plot(conns, [r["rps"] for _, r in points], style, label=label)
        cpu = [(c, cpu_per_req(r)) for c, r in points if cpu_per_req(r) is not None]
        cpu_ax.plot([c for c, _ in cpu], [v for _, v in cpu], style, label=label)
    if not drawn:
        sys.exit("bench/report.py: no sweep results to plot (bench/run --only sweep)")
    for ax, title, unit in (
        (rps_ax, "throughput (higher is better)", "requests per second"),
        (cpu_ax, "server CPU per request (lower is better)", "CPU µs per request"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(drawn), [str(c) for c in sorted(drawn)])
        ax.set_xlabel("wrk connections")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    rps_ax.legend(fontsize="small")
    fig.suptitle(
        f"one gateway worker on one CPU, wrk on the other; {notes.get('nproc', '?')} CPUs, "
        f"{notes.get('cpu', '?')}; miss rows include the simulator's CPU",
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sweep_table(sweep):
    """The sweep's rows as text: req/s, p50, p99 and CPU per request at each connection
    count, the gateway's ratios against its baseline beside them."""
    pairs = {"sweep_a_cached": "sweep_base_static", "sweep_c_miss": "sweep_base_forward"}
    head = (f"{'sweep':28} {'conns':>5} {'req/s':>9} {'ratio':>6} {'p50':>10} {'p99':>10} "
            f"{'cpu/req':>9} {'ratio':>6}")
    out = ["concurrency sweep (plot: --plot)", head, "-" * len(head)]
    for name, label, _ in SWEEP:
        base = {r["conns"]: r for r in sweep.get(pairs.get(name, ""), [])}
        for r in sorted(sweep.get(name, []), key=lambda r: r["conns"]):
            b = base.get(r["conns"])
            rps = f"{r['rps'] / b['rps']:.2f}x" if b and b["rps"] else ""
            c, cb = cpu_per_req(r), cpu_per_req(b)
            cr = f"{c / cb:.2f}x" if c and cb else ""
            out.append(f"{label:28} {r['conns']:>5} {r['rps']:>9.0f} {rps:>6} "
                       f"{ms(r['p50_us']):>10} {ms(r['p99_us']):>10} {cpu(r):>9} {cr:>6}")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--plot", metavar="FILE", help="draw the concurrency sweep here")
    args = parser.parse_args()
    runs, notes = load(args.results)
    sweep = {name: runs.pop(name) for name in list(runs) if name.startswith("sweep_")}
    if args.plot:
        plot(sweep, notes, args.plot)
    picked = {name: median_run(rs) for name, rs in runs.items()}
    rounds = max((len(rs) for rs in runs.values()), default=0)
    out = []
    out.append(
        f"machine: {notes.get('nproc', '?')} CPUs, {notes.get('cpu', '?')}; "
        f"load before {notes.get('loadavg_before', '?')} "
        f"(CPUs {notes.get('busy_before_pct', '?')}% busy before start), "
        f"after {notes.get('loadavg_after', '?')}; median of {rounds} round(s)"
    )
    if "against" in notes:
        out.append(f"--against build: {notes['against']}")
    head = (
        f"{'scenario':38} {'conns':>5} {'req/s':>9} {'ratio':>6} {'p50':>10} {'ratio':>6} "
        f"{'p99':>10} {'ratio':>6} {'cpu/req':>9} {'ratio':>6} {'non2xx':>7}  baseline"
    )
    out.append(head)
    out.append("-" * len(head))
    for label, name, base, base_label in ROWS:
        r = picked.get(name)
        # A comparison whose baseline was not measured (no --against) is left out.
        if not r or (base and base not in picked):
            continue
        def rel(value):
            v = paired(runs, name, base, value) if base else None
            return f"{v:.2f}x" if v is not None else ""

        out.append(
            f"{label:38} {r['conns']:>5} {r['rps']:>9.0f} "
            f"{rel(lambda x: x['rps']):>6} {ms(r['p50_us']):>10} "
            f"{rel(lambda x: x['p50_us']):>6} {ms(r['p99_us']):>10} "
            f"{rel(lambda x: x['p99_us']):>6} "
            f"{cpu(r):>9} {rel(cpu_per_req):>6} "
            f"{r['non2xx'] + r['socket_errors']:>7}  {base_label}"
        )
    out.append(
        "(absolute figures: the median round by req/s; ratios: the median over rounds of "
        "gateway/baseline measured in the same round. req/s: higher is better; p50, p99 and "
        "cpu/req: lower is better. cpu/req: CPU time (user + system, /proc) of the "
        "server processes per request, the simulator's included where it serves the row)"
    )

    def kib(key):
        v = notes.get(key)
        return None if v in (None, "") else int(v) * 1024

    mem = []
    for label, key in [
        ("idle RSS at start", "idle_rss_kib"),
        ("peak RSS, cached gateway (a, b, d)", "peak_rss_cached_kib"),
        ("peak RSS, miss gateway (c)", "peak_rss_miss_kib"),
        ("RSS before fan-in (e)", "fanin_rss_before_kib"),
        ("peak RSS, fan-in gateway (e)", "fanin_peak_rss_kib"),
        ("RSS after fan-in (e)", "fanin_rss_after_kib"),
    ]:
        v = kib(key)
        if v is not None:
            mem.append(f"  {label:38} {v / MIB:8.1f} MiB")
    if mem:
        out.append("gateway memory (VmRSS / VmHWM from /proc/<pid>/status):")
        out.extend(mem)
    if isinstance(notes.get("otlp_sink"), dict):
        sink = notes["otlp_sink"]
        out.append(
            f"OTLP collector received {sink['exports']} exports, {sink['bytes'] / MIB:.1f} MiB "
            "(traced rows)"
        )
    if "nginx_not_hit" in notes:
        missed = int(notes["nginx_not_hit"])
        out.append(
            f"nginx: {notes.get('nginx_reads', '?')} reads logged, the warm-up's filled the "
            "cache, " + ("every other one a cache HIT" if missed == 0 else
                         f"FAILED: {missed} answered past the cache, the nginx row is not valid")
        )
    if "ledger_rows_gateway" in notes:
        out.append(
            f"ledger rows written: gateway {notes['ledger_rows_gateway'] or '?'}, "
            f"forwarder + insert baseline {notes.get('ledger_rows_baseline') or '?'}"
        )
    if "access_lines_cached" in notes:
        out.append(
            f"access log lines written: cached gateway {notes['access_lines_cached']}, "
            f"miss gateway {notes.get('access_lines_miss', '?')}"
        )

    checks = []
    rps = lambda x: x["rps"]  # noqa: E731
    for name, base, extra in (
        ("a_cached_hs256", "base_static", ""),
        ("b_cached_rs256", "base_static_rs", ""),
        ("a_cors", "base_static_origin", " (CORS configured; beyond the issue's rows)"),
    ):
        r, v = picked.get(name), paired(runs, name, base, rps)
        if r and v is not None:
            checks.append((f"{name}{extra}: req/s >= 0.85x minimal handler", v >= 0.85, f"{v:.2f}x"))
            checks.append((f"{name}: p99 < 2 ms at {r['conns']} connections",
                           r["p99_us"] < 2000, ms(r["p99_us"])))
    v = paired(runs, "a_cached_hs256", "base_nginx", rps)
    if v is not None:
        valid = int(notes.get("nginx_not_hit", 0)) == 0
        checks.append(("a_cached_hs256: req/s ahead of nginx proxy_cache (> 1.0x)",
                       v > 1.0 and valid, f"{v:.2f}x" + ("" if valid else " (nginx row not valid)")))
    base, lat = picked.get("lat_base_static"), picked.get("lat_a_cached")
    if base and lat:
        added99 = paired_diff(runs, "lat_a_cached", "lat_base_static", lambda x: x["p99_us"])
        added50 = paired_diff(runs, "lat_a_cached", "lat_base_static", lambda x: x["p50_us"])
        out.append(
            f"latency at {lat['conns']} connections: minimal handler p50 {base['p50_us']} us, "
            f"p99 {base['p99_us']} us; row a p50 {lat['p50_us']} us, p99 {lat['p99_us']} us; "
            f"the gateway adds {added50:.0f} us at p50, {added99:.0f} us at p99"
        )
        label = f"lat_a_cached: p99 added over the handler at {lat['conns']} connections < 200 us"
        if added99 < -200:
            # The handler's tail was the longer: stalls from other load, not either server.
            checks.append((label, None, f"{added99:.0f} us (the handler's p99 was the "
                           "higher: other load on the machine; run again)"))
        else:
            checks.append((label, added99 < 200, f"{added99:.0f} us"))
    v = paired(runs, "c_miss", "base_forward", rps)
    if v is not None:
        checks.append(("c_miss: req/s >= 0.9x reqwest forwarder", v >= 0.9, f"{v:.2f}x"))
    r = picked.get("e_fanin")
    ideal = notes.get("fanin_ideal_rps")
    if r and ideal:
        checks.append((f"e_fanin: >= 90% of ideal {ideal} req/s ({r['conns']} conns)",
                       r["rps"] >= 0.9 * ideal, f"{100 * r['rps'] / ideal:.0f}%"))
        r2 = picked.get("e2_fanin")
        if r2:
            checks.append((f"e2_fanin (2 workers): >= 90% of ideal {ideal} req/s",
                           r2["rps"] >= 0.9 * ideal, f"{100 * r2['rps'] / ideal:.0f}%"))
        up = picked.get("e_upstream_slow")
        if up:
            out.append(
                f"fan-in: simulator alone reaches {100 * up['rps'] / ideal:.0f}% of ideal, "
                f"the forwarder {100 * picked['e_forward_slow']['rps'] / ideal:.0f}%"
                if "e_forward_slow" in picked else
                f"fan-in: simulator alone reaches {100 * up['rps'] / ideal:.0f}% of ideal"
            )
    idle = kib("idle_rss_kib")
    v = paired(runs, "d_activate", "base_forward_activate_ledger", rps)
    if v is not None:
        checks.append(("d_activate: req/s >= 0.6x forwarder + SQLite insert", v >= 0.6,
                       f"{v:.2f}x"))
    if idle is not None:
        checks.append(("idle RSS < 30 MiB", idle < 30 * MIB, f"{idle / MIB:.1f} MiB"))
    rss, cached = kib("memory_rss_kib"), notes.get("memory_cache_bytes")
    if rss is not None and cached not in (None, ""):
        cached = int(float(cached))
        limit = 2 * cached + 30 * MIB
        out.append(
            f"memory: {notes.get('memory_cache_entries')} cached audiences, weighted size "
            f"{cached / MIB:.1f} MiB; RSS {rss / MIB:.1f} MiB "
            f"(idle {kib('memory_idle_rss_kib') / MIB:.1f} MiB, "
            f"peak {kib('memory_peak_rss_kib') / MIB:.1f} MiB)"
        )
        checks.append(("100k cached: RSS < 2x cached bytes + 30 MiB", rss < limit,
                       f"{rss / MIB:.1f} < {limit / MIB:.1f} MiB"))
    if checks:
        out.append("targets:")
        for label, ok, value in checks:
            mark = "inconclusive" if ok is None else "met" if ok else "MISSED"
            out.append(f"  [{mark}] {label}: {value}")
    print("\n".join(out))
    if sweep:
        print(sweep_table(sweep))


if __name__ == "__main__":
    main()
