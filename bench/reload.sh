#!/usr/bin/env bash
# Reload under load: wrk drives authgate (HS256, keep-alive) while the config file is rewritten and
# SIGHUP is sent RELOADS times (default 100); reports wrk's non-2xx count and socket errors, which
# must both be 0, and how many reloads authgate logged as done.
#
# env: RELOADS (100)  CONNS (32)  AUTHGATE_BIN (default: cargo build --release)
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

RELOADS=${RELOADS:-100}
CONNS=${CONNS:-32}
[[ $RELOADS =~ ^[1-9][0-9]*$ ]] || die "RELOADS must be a positive integer"

bench_init
need_tools wrk nginx
build_authgate
port_free_or_die 18080 18083
start_backend
authgate_config
# The access log off (as in the bench config) but reload messages on: info level.
spawn authgate env BETTER_AUTH_SECRET="$BENCH_SECRET" RUST_LOG=info "$AUTHGATE_BIN" --config "$AUTHGATE_CONFIG"
GATEWAY_PID=$SPAWNED_PID
wait_port 18083 "$GATEWAY_PID" authgate
TOKEN=$(mint_token alice)

# Two valid variants of the config that differ in a reloadable setting (the body limit).
cp "$AUTHGATE_CONFIG" "$BENCH_TMP/a.toml"
{ cat "$AUTHGATE_CONFIG"; } | sed '0,/^\[\[route\]\]/s//[limits]\nmax_body_bytes = 1048576\n\n[[route]]/' >"$BENCH_TMP/b.toml"

duration=$((RELOADS / 10 + 5))
log "wrk for ${duration}s while reloading $RELOADS times"
wrk -t1 -c"$CONNS" -d"${duration}s" -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18083/api/alice/tasks >"$BENCH_TMP/wrk.log" 2>&1 &
WRK_PID=$!
sleep 1
for i in $(seq "$RELOADS"); do
  if ((i % 2)); then cp "$BENCH_TMP/b.toml" "$AUTHGATE_CONFIG"; else cp "$BENCH_TMP/a.toml" "$AUTHGATE_CONFIG"; fi
  kill -HUP "$GATEWAY_PID"
  sleep 0.08
done
wait "$WRK_PID" || true
sleep 0.5
requests=$(awk '/requests in/ { print $1 }' "$BENCH_TMP/wrk.log")
non2xx=$(awk '/Non-2xx/ { print $5 }' "$BENCH_TMP/wrk.log")
socket=$(grep -m1 'Socket errors' "$BENCH_TMP/wrk.log" || echo "Socket errors: none")
reloaded=$(grep -c 'config reloaded' "$BENCH_TMP/authgate.log" || true)
refused=$(grep -c 'config reload refused' "$BENCH_TMP/authgate.log" || true)
cat <<REPORT

## authgate reload under load, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT_DIR" && git rev-parse --short HEAD 2>/dev/null || echo '?')

| measure | value |
|---|---|
| requests during the run | ${requests:-?} (${CONNS} keep-alive connections, ${duration}s) |
| SIGHUPs sent | $RELOADS |
| reloads logged done / refused | $reloaded / $refused (file-change detection may fold some SIGHUPs together, or add one) |
| non-2xx responses (must be 0) | ${non2xx:-0} |
| socket errors (must be none) | ${socket} |
REPORT
[[ -z "$non2xx" || "$non2xx" == 0 ]] || die "non-2xx responses during reloads"
grep -q 'Socket errors' "$BENCH_TMP/wrk.log" && die "socket errors during reloads"
((reloaded > 0)) || die "authgate logged no reload"
