#!/usr/bin/env python3
"""Turn compare.sh's raw results into the Markdown report.

usage: report.py META_TSV RESULTS_TSV > report.md
META_TSV: key<TAB>value lines (repeated `warning` keys allowed).
RESULTS_TSV: one row per wrk run, with a header line (conns, round, target, rps, p50_us, ...).
"""
import csv
import sys
from collections import OrderedDict
from statistics import mean

BASELINES = ("haproxy", "nginx", "direct")


def ms(us):
    return f"{us / 1000:.2f}"


def rps_fmt(x):
    return f"{x:,.0f}"


def main(meta_path, results_path):
    meta, warnings = [], []
    with open(meta_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            (warnings.append(value) if key == "warning" else meta.append((key, value)))
    with open(results_path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    # conns -> target -> list of rows, in the order the runs happened.
    runs = OrderedDict()
    for r in rows:
        runs.setdefault(int(r["conns"]), OrderedDict()).setdefault(r["target"], []).append(r)

    out = []
    meta_d = dict(meta)
    out.append(f"# authgate side-by-side benchmark, {meta_d.get('date', '?')}")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    for k, v in meta:
        out.append(f"| {k} | {v.replace('|', '/')} |")
    out.append("")
    out.append("Everything (load generator, backend, proxies) shares this machine's cores, and the machine is "
               "shared and noisy: absolute numbers move from run to run. Only the ratios between targets "
               "measured in the same run mean anything.")
    out.append("")
    if warnings:
        out.append("**Warnings**")
        out.append("")
        for w in warnings:
            out.append(f"- {w}")
        out.append("")

    summary = {}  # (conns, target) -> dict
    for conns, targets in runs.items():
        out.append(f"## {conns} connection{'s' if conns != 1 else ''}")
        out.append("")
        out.append("| target | mean req/s | spread (min–max) | p50 ms | p99 ms | non-2xx | socket errors | rounds |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for target, rs in targets.items():
            rps = [float(r["rps"]) for r in rs]
            s = {
                "rps": mean(rps),
                "min": min(rps),
                "max": max(rps),
                "p50": mean(float(r["p50_us"]) for r in rs),
                "p99": mean(float(r["p99_us"]) for r in rs),
                "non2xx": sum(int(r["non2xx"]) for r in rs),
                "sockerr": sum(int(r["sockerr"]) for r in rs),
                "n": len(rs),
            }
            summary[(conns, target)] = s
            pct = (s["max"] - s["min"]) / 2 / s["rps"] * 100 if s["rps"] else 0
            spread = f"{rps_fmt(s['min'])}–{rps_fmt(s['max'])} (±{pct:.0f}%)"
            out.append(f"| {target} | {rps_fmt(s['rps'])} | {spread} | {ms(s['p50'])} | {ms(s['p99'])} | "
                       f"{s['non2xx']} | {s['sockerr']} | {s['n']} |")
        out.append("")

    gateways = [t for t in OrderedDict.fromkeys(r["target"] for r in rows) if t.startswith("authgate")]
    cols = [b for b in BASELINES if any((c, b) in summary for c in runs)]
    if gateways and cols:
        out.append("## Ratios")
        out.append("")
        out.append("req/s ratio above 1: authgate serves more than the other; p99 ratio below 1: authgate's p99 "
                   "latency is lower. p50/p99 are the mean over rounds of each round's percentile.")
        out.append("")
        head = " | ".join([f"req/s ÷ {b}" for b in cols] + [f"p99 ÷ {b}" for b in cols])
        out.append(f"| connections | target | {head} |")
        out.append("|" + "---|" * 2 + "---:|" * (2 * len(cols)))
        for conns in runs:
            for g in gateways:
                if (conns, g) not in summary:
                    continue
                gs = summary[(conns, g)]
                cells = []
                for key in ("rps", "p99"):
                    for b in cols:
                        bs = summary.get((conns, b))
                        cells.append(f"{gs[key] / bs[key]:.2f}" if bs and bs[key] else "–")
                out.append(f"| {conns} | {g} | " + " | ".join(cells) + " |")
        out.append("")

    def versus_hs256(target, title, note):
        """Same-round ratios of one authgate target against authgate-hs256."""
        if not (any(r["target"] == target for r in rows) and any(r["target"] == "authgate-hs256" for r in rows)):
            return
        out.append(f"## {title}")
        out.append("")
        out.append(note + " Per-round ratios pair the two runs of the same round.")
        out.append("")
        out.append("| connections | mean req/s ratio | per-round ratios |")
        out.append("|---:|---:|---|")
        for conns in runs:
            other = {r["round"]: float(r["rps"]) for r in rows if int(r["conns"]) == conns and r["target"] == target}
            hs = {r["round"]: float(r["rps"]) for r in rows if int(r["conns"]) == conns and r["target"] == "authgate-hs256"}
            pairs = [other[k] / hs[k] for k in other if k in hs and hs[k]]
            if not pairs:
                continue
            mean_ratio = (sum(other.values()) / len(other)) / (sum(hs.values()) / len(hs))
            out.append(f"| {conns} | {mean_ratio:.2f} | " + ", ".join(f"{p:.2f}" for p in pairs) + " |")
        out.append("")

    versus_hs256("authgate-eddsa", "EdDSA (JWKS) vs HS256 through authgate",
                 "Target: EdDSA ≥ 0.9 × HS256 (the verified-token cache makes a repeated token skip "
                 "signature verification).")
    versus_hs256("authgate-access", "authgate's JSON access log on vs off",
                 "Target: at least 0.97 (the access log costs at most 3 %). authgate-access writes one JSON "
                 "line per request to its stderr, a file.")
    versus_hs256("authgate-session", "Better Auth session cookie vs HS256 bearer through authgate",
                 "Target: a cookie-authenticated request with a warm session cache ≥ 0.9 × an HS256 "
                 "bearer request. The cookie's signature is checked on every request; Better Auth "
                 "(a real server on this machine) is asked once per cache_ttl (30 s).")

    def ratio_rows(pairs):
        """Same-round ratios of each (a, b) pair present in this run: one row per connection count."""
        lines = []
        for a, b, label in pairs:
            for conns in runs:
                ra = {r["round"]: float(r["rps"]) for r in rows if int(r["conns"]) == conns and r["target"] == a}
                rb = {r["round"]: float(r["rps"]) for r in rows if int(r["conns"]) == conns and r["target"] == b}
                paired = [k for k in ra if k in rb and rb[k]]
                if not paired:
                    continue
                mean_ratio = mean(ra[k] for k in paired) / mean(rb[k] for k in paired)
                per = ", ".join(f"{ra[k] / rb[k]:.2f}" for k in paired)
                lines.append(f"| {conns} | {label} | {a} ÷ {b} | {mean_ratio:.2f} | {per} |")
        return lines

    logging = ratio_rows([
        ("authgate-hs256", "haproxy", "off"), ("authgate-access", "haproxy-log", "on"),
        ("authgate-hs256", "nginx", "off"), ("authgate-access", "nginx-log", "on"),
    ])
    if any("| on |" in line for line in logging):
        out.append("## Access logs off and on, same run")
        out.append("")
        out.append("Each peer with its access log off and on, side by side in the same rounds: nginx-log writes "
                   "a JSON log_format line per request to a file (buffer=64k), haproxy-log an httplog line "
                   "to a file, authgate-access its default JSON access log to a file. Target: authgate's "
                   "ratios with logs on no worse than with logs off. Per-round ratios pair the runs of one round.")
        out.append("")
        out.append("| connections | access logs | ratio | mean req/s ratio | per-round ratios |")
        out.append("|---:|---|---|---:|---|")
        out.extend(logging)
        out.append("")

    local_rows = [r for r in rows if r["target"] == "authgate-limit-local"]
    redis_rows = [r for r in rows if r["target"] == "authgate-limit-redis"]
    if local_rows and redis_rows:
        out.append("## A per-user limit through Redis ([store]) vs the same limit in process")
        out.append("")
        out.append("Target: Redis ≥ 0.7 × in process at 32 connections. Redis runs on this machine and "
                   "shares its cores. p99 added: Redis p99 minus in-process p99 (mean over rounds). "
                   "Redis CPU: redis-server's user + system time over the Redis runs, per request.")
        out.append("")
        out.append("| connections | mean req/s ratio | per-round ratios | p99 added ms | Redis CPU µs/request |")
        out.append("|---:|---:|---|---:|---:|")
        for conns in runs:
            lo = {r["round"]: r for r in local_rows if int(r["conns"]) == conns}
            rd = {r["round"]: r for r in redis_rows if int(r["conns"]) == conns}
            pairs = [float(rd[k]["rps"]) / float(lo[k]["rps"]) for k in rd if k in lo and float(lo[k]["rps"])]
            if not pairs:
                continue
            mean_ratio = (sum(float(r["rps"]) for r in rd.values()) / len(rd)) / (
                sum(float(r["rps"]) for r in lo.values()) / len(lo))
            p99_added = (sum(float(r["p99_us"]) for r in rd.values()) / len(rd)
                         - sum(float(r["p99_us"]) for r in lo.values()) / len(lo)) / 1000
            cpu = meta_d.get(f"redis cpu c={conns}")
            total = sum(int(r["requests"]) for r in rd.values())
            cpu_cell = f"{float(cpu) * 1e6 / total:.2f}" if cpu and total else "–"
            out.append(f"| {conns} | {mean_ratio:.2f} | " + ", ".join(f"{p:.2f}" for p in pairs)
                       + f" | {p99_added:+.2f} | {cpu_cell} |")
        out.append("")

    out.append("<details><summary>every run</summary>")
    out.append("")
    out.append("| connections | round | target | req/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | socket errors |")
    out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        out.append(f"| {r['conns']} | {r['round']} | {r['target']} | {rps_fmt(float(r['rps']))} | "
                   f"{ms(float(r['p50_us']))} | {ms(float(r['p90_us']))} | {ms(float(r['p99_us']))} | "
                   f"{ms(float(r['max_us']))} | {r['non2xx']} | {r['sockerr']} |")
    out.append("")
    out.append("</details>")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
