#!/usr/bin/env bash
# server.pin_workers on and off, side by side with HAProxy, at 32 keep-alive connections: the
# setting that decides where the 32-connection p99 tail comes from (see worker_cpus in
# src/runtime/server.rs). Each round runs HAProxy, then starts a fresh authgate with pin_workers = false
# and one with pin_workers = true: where the kernel first puts unbound workers is decided at
# start-up, so only fresh processes sample it.
# For fairness it also runs HAProxy with its two threads bound the same way (`cpu-map`, on :18088),
# next to HAProxy as configured in bench/haproxy.cfg (unbound, as the peers ship).
# Writes bench/results/<date>-pinning.md and prints it.
# With HOG=1 a busy loop bound to CPU 0 runs throughout (a CPU-bound neighbour that bound workers
# cannot move away from).
# env: ROUNDS (6)  SECS (4)  CONNS (32)  HOG (0)  AUTHGATE_BIN (default: cargo build --release)
#      KEEP_TMP=1
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ROUNDS=${ROUNDS:-6}
SECS=${SECS:-4}
CONNS=${CONNS:-32}
for v in ROUNDS SECS CONNS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done

need_tools nginx haproxy wrk curl
build_authgate
port_free_or_die 18080 18081 18083 18088
bench_init
raise_nofile 16384
start_backend
JWT_SECRET=$BENCH_SECRET haproxy -c -f "$BENCH_DIR/haproxy.cfg" >"$BENCH_TMP/haproxy-check.log" 2>&1 ||
  { cat "$BENCH_TMP/haproxy-check.log" >&2; die "haproxy rejected bench/haproxy.cfg"; }
spawn haproxy env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$BENCH_DIR/haproxy.cfg"
wait_port 18081 "$SPAWNED_PID" haproxy
sed -e 's/^  nbthread 2$/  nbthread 2\n  cpu-map auto:1\/1-2 0-1/' -e 's/127.0.0.1:18081/127.0.0.1:18088/' \
  "$BENCH_DIR/haproxy.cfg" >"$BENCH_TMP/haproxy-pinned.cfg"
grep -q '^  cpu-map' "$BENCH_TMP/haproxy-pinned.cfg" || die "could not add cpu-map to haproxy.cfg"
spawn haproxy-pinned env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$BENCH_TMP/haproxy-pinned.cfg"
wait_port 18088 "$SPAWNED_PID" haproxy-pinned
TOKEN=$(mint_token alice) || die "could not mint a token"
if [[ "${HOG:-0}" == 1 ]]; then
  command -v taskset >/dev/null || die "HOG=1 needs taskset (util-linux)"
  spawn cpu-hog taskset -c 0 sh -c 'while :; do :; done'
fi

# One wrk run against PORT: prints "req/s p50_ms p99_ms" and checks every answer was a 2xx.
measure() {
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$1/api/alice/tasks")
  [[ $out != *"Non-2xx"* && $out != *"Socket errors"* ]] || die "errors in the run against :$1: $out"
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
    /Requests\/sec/ { rps = $2 } / 50%/ { p50 = ms($2) } / 99%/ { p99 = ms($2) }
    END { printf "%.0f %.2f %.2f\n", rps, p50, p99 }' <<<"$out"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

ROWS=()
for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS: haproxy"
  read -r hrps hp50 hp99 < <(measure 18081)
  ROWS+=("| $round | haproxy | $hrps | $hp50 | $hp99 | | | | |")
  log "round $round/$ROUNDS: haproxy with cpu-map"
  read -r prps pp50 pp99 < <(measure 18088)
  ROWS+=("| $round | haproxy cpu-map | $prps | $pp50 | $pp99 | | | | |")
  for pin in false true; do
    log "round $round/$ROUNDS: authgate pin_workers=$pin"
    AUTHGATE_PIN=$pin authgate_config
    start_authgate "authgate-pin-$pin-$round"
    read -r rps p50 p99 < <(measure 18083)
    kill -TERM "$AUTHGATE_PID"
    wait "$AUTHGATE_PID" 2>/dev/null || true
    ROWS+=("| $round | authgate pin_workers=$pin | $rps | $p50 | $p99 | $(ratio "$rps" "$hrps") | $(ratio "$p99" "$hp99") | $(ratio "$rps" "$prps") | $(ratio "$p99" "$pp99") |")
  done
done

OUT=$ROOT_DIR/bench/results/$(date -u +%F)-pinning$([[ "${HOG:-0}" == 1 ]] && echo -hog || true).md
{
  echo "# server.pin_workers on and off, $(date -u '+%F %T') UTC"
  echo
  echo "commit $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores;" \
    "wrk -t1 -c$CONNS -d${SECS}s keep-alive, GET /api/alice/tasks with an HS256 token; a fresh authgate per run." \
    "$([[ "${HOG:-0}" == 1 ]] && echo 'A busy loop bound to CPU 0 ran throughout (HOG=1).' || true)"
  echo "Ratios are against the HAProxy runs of the same round: as configured (bench/haproxy.cfg,"
  echo "threads unbound) and with \`cpu-map auto:1/1-2 0-1\` (threads bound like authgate's workers)."
  echo
  echo "| round | target | req/s | p50 ms | p99 ms | req/s ÷ haproxy | p99 ÷ haproxy | req/s ÷ haproxy cpu-map | p99 ÷ haproxy cpu-map |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"
