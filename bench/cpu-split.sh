#!/usr/bin/env bash
# Where the CPU goes, per request, for each proxy in one run: the proxy's user and system time, the
# backend's, and the load generator's (wrk), from /proc/<pid>/stat ticks around each run (wrk's
# through /usr/bin/time). On this machine the whole system is CPU-bound at 32 connections, so
# req/s ratios follow the ratio of these totals; the split shows which part of a gap is the
# proxy's own code (user), which the kernel's TCP work (sys), and what the peers make the backend
# and the client spend. It also prints the total CPU per request authgate would need for the
# issue 10 throughput targets (1.25x HAProxy, 1.0x nginx) next to what it spends outside its own
# code.
#   nginx     nginx plain reverse proxy, no auth, :18082
#   haproxy   HAProxy doing authgate's work (bench/haproxy.cfg), :18081
#   authgate  authgate, HS256, :18083
# env: SECS (4)  ROUNDS (3)  CONNS (32)  AUTHGATE_BIN (default: cargo build --release)
#      AUTHGATE_WORKERS  AUTHGATE_PIN  KEEP_TMP=1
#      PROTO=h2c: HTTP/2 with prior knowledge from h2load (-t1, CONNS connections, STREAMS (10)
#      streams each) to HAProxy and authgate only (the nginx proxy here speaks HTTP/1.1), and the
#      budget of the 1.2x HAProxy target for HTTP/2 instead of 1.25x
# Writes bench/results/<date>-cpu-split.md (or -N.md when that exists).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

SECS=${SECS:-4}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-10}
PROTO=${PROTO:-h1}
for v in SECS ROUNDS CONNS STREAMS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done
case $PROTO in
  h1) TARGETS=(nginx haproxy authgate); GOAL=1.25; LOAD_DESC="wrk -t1 -c$CONNS -d${SECS}s keep-alive" ;;
  h2c)
    TARGETS=(haproxy authgate); GOAL=1.2
    LOAD_DESC="h2load -t1 -c$CONNS -m$STREAMS -D$SECS, HTTP/2 with prior knowledge"
    command -v h2load >/dev/null || die "PROTO=h2c needs h2load (apt-get install nghttp2-client)"
    ;;
  *) die "PROTO must be h1 or h2c" ;;
esac

need_tools nginx haproxy wrk curl
if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) == 0 ]] || die "need GNU time at /usr/bin/time (apt-get install time)"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time; } >&2 || die "apt-get install time failed"
fi
build_authgate
port_free_or_die 18080 18081 18082 18083
bench_init
start_watchdog $((ROUNDS * 3 * (SECS + 25) + 60))
sample_busy
start_backend
start_nginx nginx-proxy "$BENCH_DIR/nginx-proxy.conf" 18082
spawn haproxy env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$BENCH_DIR/haproxy.cfg"
HAPROXY_PID=$SPAWNED_PID
wait_port 18081 "$HAPROXY_PID" haproxy
authgate_config
start_authgate authgate
TOKEN=$(mint_token alice) || die "could not mint a token"

TICK=$(getconf CLK_TCK)
children() { pgrep -P "$(cat "$BENCH_TMP/$1.pid")" | tr '\n' ' '; }
BACKEND_PIDS=$(children nginx-backend)
pids_of() {
  case $1 in
    nginx) children nginx-proxy ;;
    haproxy) echo "$HAPROXY_PID" ;;
    authgate) echo "$AUTHGATE_PID" ;;
  esac
}
port_of() { case $1 in nginx) echo 18082 ;; haproxy) echo 18081 ;; authgate) echo 18083 ;; esac; }
# "user sys" ticks summed over the given pids (all their threads).
ticks() {
  local u=0 s=0 pid a b
  for pid in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$pid/stat")
    u=$((u + a)) s=$((s + b))
  done
  echo "$u $s"
}

ROWS=$BENCH_TMP/rows
: >"$ROWS"
# run_load TARGET: the load's output, normalised to "REQUESTS RATE NON_2XX"; its CPU in wrk.time.
run_load() {
  local url out
  url="http://127.0.0.1:$(port_of "$1")/api/alice/tasks"
  if [[ $PROTO == h2c ]]; then
    out=$(timeout --foreground --signal=INT $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$BENCH_TMP/wrk.time" \
      h2load -t1 -c"$CONNS" -m"$STREAMS" -D"$SECS" -H "Authorization: Bearer $TOKEN" "$url" 2>&1) || return 1
    grep -q 'Application protocol: h2c' <<<"$out" || { warn "$1: h2load did not speak h2c"; return 1; }
    local n rate ok2xx
    n=$(awk '/^requests:/ {print $8}' <<<"$out")
    rate=$(awk '/^finished in/ {print $4}' <<<"$out")
    ok2xx=$(awk '/^status codes:/ {print $3}' <<<"$out")
    echo "$n $rate $((${n:-0} - ${ok2xx:-0}))"
  else
    out=$(timeout --foreground --signal=INT $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$BENCH_TMP/wrk.time" \
      wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Authorization: Bearer $TOKEN" "$url" 2>&1) || return 1
    echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
      "$(grep -q Non-2xx <<<"$out" && echo 1 || echo 0)"
  fi
}

for round in $(seq "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046
    read -r pu0 ps0 < <(ticks $(pids_of $target))
    # shellcheck disable=SC2086
    read -r bu0 bs0 < <(ticks $BACKEND_PIDS)
    read -r requests rate bad < <(run_load "$target") || { warn "$target round $round: the load failed"; continue; }
    # shellcheck disable=SC2046
    read -r pu1 ps1 < <(ticks $(pids_of $target))
    # shellcheck disable=SC2086
    read -r bu1 bs1 < <(ticks $BACKEND_PIDS)
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 ]] || { warn "$target round $round: no request count from the load"; continue; }
    [[ $bad == 0 ]] || warn "$target round $round: non-2xx answers"
    read -r wu ws <"$BENCH_TMP/wrk.time"
    echo "$round $target $rate $requests $((pu1 - pu0)) $((ps1 - ps0)) $((bu1 - bu0)) $((bs1 - bs0)) $wu $ws" >>"$ROWS"
    log "round $round $target: $rate req/s"
  done
done

OUT=$ROOT_DIR/bench/results/$(date -u +%F)-cpu-split.md
n=2
while [[ -e $OUT ]]; do OUT=$ROOT_DIR/bench/results/$(date -u +%F)-cpu-split-$n.md; n=$((n + 1)); done
{
  echo "# CPU per request by process, $(date -u '+%F %T UTC')"
  echo
  echo "commit $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) cores;" \
    "$LOAD_DESC, GET /api/alice/tasks (HS256), $ROUNDS rounds alternating;" \
    "busy before: ${BUSY_PCT}% of all cores"
  echo
  python3 - "$ROWS" "$TICK" "$GOAL" <<'PY'
import sys
from collections import defaultdict

rows, tick, goal = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
runs = defaultdict(list)
for line in open(rows):
    r, target, rate, n, pu, ps, bu, bs, wu, ws = line.split()
    n = int(n)
    per = lambda ticks: float(ticks) / tick * 1e6 / n  # µs per request
    parts = {"proxy user": per(pu), "proxy sys": per(ps), "backend user": per(bu),
             "backend sys": per(bs), "client user": float(wu) * 1e6 / n, "client sys": float(ws) * 1e6 / n}
    parts["total"] = sum(parts.values())
    runs[target].append((float(rate), parts))

cols = ["proxy user", "proxy sys", "backend user", "backend sys", "client user", "client sys", "total"]
print("Microseconds of CPU per request (mean over rounds; min–max of the total in the last column).")
print()
print("| target | req/s | " + " | ".join(cols) + " | total spread |")
print("|---|---:|" + "---:|" * len(cols) + "---:|")
mean = {}
for target in ("nginx", "haproxy", "authgate"):
    got = runs.get(target)
    if not got:
        continue
    m = {c: sum(p[c] for _, p in got) / len(got) for c in cols}
    mean[target] = m
    rate = sum(r for r, _ in got) / len(got)
    totals = [p["total"] for _, p in got]
    print(f"| {target} | {rate:,.0f} | " + " | ".join(f"{m[c]:.2f}" for c in cols)
          + f" | {min(totals):.2f}–{max(totals):.2f} |")
print()
if {"haproxy", "authgate"} <= mean.keys():
    a, h, g = mean["authgate"], mean["haproxy"], mean.get("nginx")
    rest = a["total"] - a["proxy user"]
    print("What the throughput targets ask, when throughput is total CPU per request (the machine")
    print("is saturated):")
    print()
    goals = [(f"{goal:g}x HAProxy", h["total"] / goal)] + ([("1.0x nginx", g["total"])] if g else [])
    print("- " + "; ".join(f"{name}: authgate's total at most {budget:.2f} µs/request" for name, budget in goals) + ".")
    print(f"- authgate now: {a['total']:.2f}, of which {a['proxy user']:.2f} is its own user time"
          f" and {rest:.2f} is the kernel, the backend and the load generator.")
    for name, budget in goals:
        room = budget - rest
        if room <= 0:
            print(f"- {name}: out of reach even with no user time at all"
                  f" ({rest:.2f} > {budget:.2f}).")
        else:
            peer = f"; the nginx plain proxy, no auth: {g['proxy user']:.2f}" if g else ""
            print(f"- {name}: authgate's user time would have to fall to {room:.2f} µs/request"
                  f" (now {a['proxy user']:.2f}; HAProxy's: {h['proxy user']:.2f}{peer}).")
PY
} | tee "$OUT"
if ((${#BENCH_WARNINGS[@]})); then
  { echo; echo "Warnings:"; for w in "${BENCH_WARNINGS[@]}"; do echo "- $w"; done; } | tee -a "$OUT"
fi
log "saved to $OUT"
