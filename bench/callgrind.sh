#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: far steadier on a
# noisy machine than req/s. Not exact, though: how many requests one wake-up handles depends on
# timing even under valgrind, so runs of the same build differ by a few percent.
# Runs one authgate (workers = 1) under callgrind in front of the nginx backend; after a warm-up
# its counters are zeroed, it serves a batch of N1 and then, zeroed again, N2 keep-alive requests
# (h2load --h1, 4 connections, GET /api/alice/tasks with an HS256 token), each batch dumped by
# callgrind_control, so that start-up and one-time initialisation are never counted. Reports the
# instructions per request of each batch and the top functions of the N2 batch, per request.
# Kernel time is not counted: pair it with bench/compare.sh for the whole picture.
# env: N1 (1000)  N2 (6000)  AUTHGATE_BIN (default: cargo build --release)  KEEP_TMP=1
#      TOP (15: how many functions to list by exclusive cost from the N2 batch)
#      ACCESS_LOG=1: authgate's JSON access log on (to a file), to count what it costs
#      PROTO=h2c: the load over HTTP/2 with prior knowledge (h2load -c 4 -m 10) instead of HTTP/1.1,
#      to count what the HTTP/2 server costs per request without TLS
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

N1=${N1:-1000}
N2=${N2:-6000}
TOP=${TOP:-15}
PROTO=${PROTO:-h1}
case $PROTO in
  h1) LOAD_ARGS=(--h1 -c 4); LOAD_DESC="h2load --h1 -c 4" ;;
  h2c) LOAD_ARGS=(-c 4 -m 10); LOAD_DESC="h2load -c 4 -m 10 (HTTP/2, prior knowledge)" ;;
  *) die "PROTO must be h1 or h2c" ;;
esac
for v in N1 N2 TOP; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done
((N2 > N1)) || die "N2 must be larger than N1"

need_tools nginx curl
if ! command -v valgrind >/dev/null || ! command -v h2load >/dev/null; then
  [[ $(id -u) == 0 ]] || die "need valgrind and h2load (apt-get install valgrind nghttp2-client)"
  log "installing valgrind nghttp2-client"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind nghttp2-client; } >&2 ||
    die "apt-get install valgrind nghttp2-client failed"
fi
build_authgate
port_free_or_die 18080 18083
bench_init
start_backend
AUTHGATE_WORKERS=1 authgate_config
if [[ ${ACCESS_LOG:-0} == 1 ]]; then
  sed -i 's/^access = false/access = true/' "$AUTHGATE_CONFIG"
  grep -q '^access = true' "$AUTHGATE_CONFIG" || die "could not turn authgate's access log on"
fi
TOKEN=$(mint_token alice) || die "could not mint a token"

# One authgate process under callgrind. Its counters are zeroed once it has served a warm-up
# batch (start-up, lazy initialisation such as governor's clock calibration, which spins for a
# wall-clock time and so costs a different number of instructions on every run, and the first
# connections are not counted), then dumped after exactly N1 and, zeroed again, N2 requests: each
# dump holds only the serving of its batch.
CG_OUT=$BENCH_TMP/callgrind.out
spawn authgate-callgrind env BETTER_AUTH_SECRET="$BENCH_SECRET" \
  valgrind --tool=callgrind --callgrind-out-file="$CG_OUT" "$AUTHGATE_BIN" --config "$AUTHGATE_CONFIG"
CG_PID=$SPAWNED_PID
wait_port 18083 "$CG_PID" authgate-callgrind 60

load() { # N: N keep-alive requests, every answer a 2xx
  local codes
  codes=$(h2load "${LOAD_ARGS[@]}" -n "$1" -H "Authorization: Bearer $TOKEN" \
    http://127.0.0.1:18083/api/alice/tasks | grep -E '^status codes')
  [[ $codes == *"$1 2xx"* ]] || die "expected $1 2xx answers, h2load said: $codes"
}

# count_batch N: zero the counters, serve N requests, dump; prints the dump's total Ir.
count_batch() {
  local n=$1 before dump
  callgrind_control -z "$CG_PID" >/dev/null || die "callgrind_control could not zero the counters"
  load "$n"
  before=$(ls "$CG_OUT".* 2>/dev/null | wc -l)
  callgrind_control -d "batch-$n" "$CG_PID" >/dev/null || die "callgrind_control could not dump"
  dump=$(ls -t "$CG_OUT".* | head -n 1)
  (($(ls "$CG_OUT".* | wc -l) > before)) || die "no callgrind dump appeared for the $n-request batch"
  mv "$dump" "$BENCH_TMP/callgrind.$n"
  callgrind_annotate --threshold=100 "$BENCH_TMP/callgrind.$n" >"$BENCH_TMP/callgrind.$n.txt" 2>/dev/null
  awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}' "$BENCH_TMP/callgrind.$n.txt"
}

log "warm-up: 500 requests (not counted)"
load 500
log "callgrind batch of $N1 requests"
IR1=$(count_batch "$N1")
log "callgrind batch of $N2 requests"
IR2=$(count_batch "$N2")
kill -TERM "$CG_PID"
wait "$CG_PID" 2>/dev/null || true
PER1=$((IR1 / N1))
PER2=$((IR2 / N2))
PER_REQUEST=$(((IR2 - IR1) / (N2 - N1)))

OUT=$ROOT_DIR/bench/results/$(date -u +%F)-callgrind.md
n=1
while [[ -e $OUT ]]; do OUT=$ROOT_DIR/bench/results/$(date -u +%F)-callgrind-$n.md; n=$((n + 1)); done
{
  echo "# authgate instructions per request (callgrind), $(date -u '+%F %T UTC')"
  echo
  echo "commit $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown);" \
    "workers = 1; $LOAD_DESC; GET /api/alice/tasks, HS256, nginx backend;" \
    "counters zeroed after a 500-request warm-up, then one batch of $N1 and one of $N2 requests;" \
    "access log $([[ ${ACCESS_LOG:-0} == 1 ]] && echo on || echo off)"
  echo
  echo "| batch | requests | total Ir | Ir per request |"
  echo "|---|---:|---:|---:|"
  echo "| 1 | $N1 | $IR1 | $PER1 |"
  echo "| 2 | $N2 | $IR2 | $PER2 |"
  echo
  echo "**user-space instructions per request: $PER2** ($N2-request batch; the difference of the"
  echo "two batches gives $PER_REQUEST)"
  echo
  echo "Top $TOP functions by exclusive instructions per request, $N2-request batch (inlined code"
  echo "is counted in the function it was inlined into):"
  echo
  echo "| Ir per request | share | function |"
  echo "|---:|---:|---|"
  python3 - "$BENCH_TMP/callgrind.$N2.txt" "$N2" "$TOP" <<'PY'
import re, sys
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows, total = [], None
for line in open(path):
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
    if not m:
        continue
    ir = int(m.group(1).replace(",", ""))
    name = m.group(2).strip()
    if "PROGRAM TOTALS" in name:
        total = ir
        continue
    name = re.sub(r"\s*\[[^\]]*\]$", "", name).replace("???:", "")
    name = re.sub(r"^\./[^:]*:", "", name)
    rows.append((ir, name))
# A dump taken while the process runs also charges the frames on the stack at that moment (the
# thread's entry, the runtime's loop) with everything below them: those are not places.
rows = [(ir, name) for ir, name in rows if not total or ir < 0.95 * total]
rows.sort(reverse=True)
for ir, name in rows[:top]:
    share = 100 * ir / total if total else 0
    print(f"| {ir / n:,.0f} | {share:.1f}% | `{name.replace('|', '/')[:140]}` |")
PY
} | tee "$OUT"
log "saved to $OUT"
