#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: far steadier on a
# noisy machine than req/s. Not exact, though: how many requests one wake-up handles depends on
# timing even under valgrind, so runs of the same build differ by up to about 4%.
# Runs authgate (workers = 1) under callgrind in front of the nginx backend twice, serving N1 and
# then N2 keep-alive requests (h2load --h1, 4 connections, GET /api/alice/tasks with an HS256
# token), and reports (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up and shutdown.
# Kernel time is not counted: pair it with bench/compare.sh for the whole picture.
# env: N1 (1000)  N2 (6000)  AUTHGATE_BIN (default: cargo build --release)  KEEP_TMP=1
#      TOP (15: how many functions to list by exclusive cost from the N2 run)
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

N1=${N1:-1000}
N2=${N2:-6000}
TOP=${TOP:-15}
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
TOKEN=$(mint_token alice) || die "could not mint a token"

# Total Ir of one authgate run serving $1 requests.
count_run() {
  local n=$1 out=$BENCH_TMP/callgrind.$1 pid
  spawn "authgate-callgrind-$n" env BETTER_AUTH_SECRET="$BENCH_SECRET" \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$AUTHGATE_BIN" --config "$AUTHGATE_CONFIG"
  pid=$SPAWNED_PID
  wait_port 18083 "$pid" "authgate-callgrind-$n" 60
  local codes
  codes=$(h2load --h1 -n "$n" -c 4 -H "Authorization: Bearer $TOKEN" \
    http://127.0.0.1:18083/api/alice/tasks | grep -E '^status codes')
  [[ $codes == *"$n 2xx"* ]] || die "expected $n 2xx answers, h2load said: $codes"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  callgrind_annotate "$out" >"$out.txt" 2>/dev/null
  awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}' "$out.txt"
}

log "callgrind run with $N1 requests"
IR1=$(count_run "$N1")
log "callgrind run with $N2 requests"
IR2=$(count_run "$N2")
PER_REQUEST=$(((IR2 - IR1) / (N2 - N1)))

OUT=$ROOT_DIR/bench/results/$(date -u +%F)-callgrind.md
{
  echo "# authgate instructions per request (callgrind), $(date -u '+%F %T UTC')"
  echo
  echo "commit $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown);" \
    "workers = 1; h2load --h1 -c 4; GET /api/alice/tasks, HS256, nginx backend"
  echo
  echo "| run | requests | total Ir |"
  echo "|---|---:|---:|"
  echo "| 1 | $N1 | $IR1 |"
  echo "| 2 | $N2 | $IR2 |"
  echo
  echo "**user-space instructions per request: $PER_REQUEST**"
  echo
  echo "Top $TOP functions by exclusive Ir in the $N2-request run (start-up included):"
  echo
  echo '```'
  awk '/file:function/ {on = 1; getline; next} on && NF && shown < top {print substr($0, 1, 160); shown++}' \
    top="$TOP" "$BENCH_TMP/callgrind.$N2.txt"
  echo '```'
} | tee "$OUT"
log "saved to $OUT"
