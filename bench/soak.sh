#!/usr/bin/env bash
# Soak: SOAK_REQUESTS (default 1,000,000) requests over loopback through authgate, a mix of valid
# tokens, spoofed identity headers, invalid and missing tokens, cross-user paths and malformed
# targets (bench/soak.lua). Reports authgate's RSS at start, middle and end, the answers by status,
# the number of 5xx (must be 0: the backend is healthy), and the number of requests that reached the
# backend without a valid identity (must be 0), read from the backend's own access log.
#
# env: SOAK_REQUESTS (1000000)  CONNS (32)  MAX_SECS (600: wrk's hard stop)  AUTHGATE_BIN
# The brute-force guard is turned off in the soak config: every invalid token comes from 127.0.0.1,
# and the point here is to push them all through verification, not to be rate limited.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

SOAK_REQUESTS=${SOAK_REQUESTS:-1000000}
CONNS=${CONNS:-32}
MAX_SECS=${MAX_SECS:-600}
[[ $SOAK_REQUESTS =~ ^[1-9][0-9]*$ ]] || die "SOAK_REQUESTS must be a positive integer"

bench_init
need_tools wrk nginx
build_authgate
raise_nofile 4096
port_free_or_die 18090 18093

# The backend logs the identity and target of every request it receives.
cat >"$BENCH_TMP/backend.conf" <<CONF
worker_processes 1;
events { worker_connections 4096; }
http {
  log_format soak '\$http_x_user_id|\$request_uri';
  access_log $BENCH_TMP/backend-access.log soak;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18090 backlog=4096;
    location / { default_type application/json; return 200 '{"path":"\$uri","user":"\$http_x_user_id"}'; }
  }
}
CONF
start_nginx soak-backend "$BENCH_TMP/backend.conf" 18090

# The bench config on other ports, with the brute-force guard off (a table before the routes).
sed -e 's/127.0.0.1:18083/127.0.0.1:18093/' -e 's/127.0.0.1:18080/127.0.0.1:18090/' \
  -e '0,/^\[\[route\]\]/s//[rate_limit]\nauth_failures = "off"\n\n[[route]]/' \
  "$BENCH_DIR/gateway.bench.toml" >"$BENCH_TMP/gateway.toml"
BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$BENCH_TMP/gateway.toml" >&2
spawn authgate env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$BENCH_TMP/gateway.toml"
GATEWAY_PID=$SPAWNED_PID
wait_port 18093 "$GATEWAY_PID" authgate

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$GATEWAY_PID/status"; }
TOKEN_ALICE=$(mint_token alice) || die "could not mint a token"
export TOKEN_ALICE SOAK_REQUESTS

RSS_START=$(rss_kib)
log "soak: $SOAK_REQUESTS requests, $CONNS connections, authgate pid $GATEWAY_PID, RSS ${RSS_START} KiB"
: >"$BENCH_TMP/rss.log"
( while kill -0 "$GATEWAY_PID" 2>/dev/null; do rss_kib >>"$BENCH_TMP/rss.log" || true; sleep 1; done ) &
SAMPLER=$!
BENCH_PIDS+=("$SAMPLER")
started=$(date +%s)
# wrk's thread:stop() stops sending but wrk then waits out -d; so stop wrk once the count is in.
wrk -t1 -c"$CONNS" -d"${MAX_SECS}s" -s "$BENCH_DIR/soak.lua" http://127.0.0.1:18093 >"$BENCH_TMP/wrk.log" 2>&1 &
WRK_PID=$!
while kill -0 "$WRK_PID" 2>/dev/null; do
  if grep -q '^soak-statuses' "$BENCH_TMP/wrk.log"; then
    elapsed=$(($(date +%s) - started))
    kill -INT "$WRK_PID" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
wait "$WRK_PID" 2>/dev/null || true
elapsed=${elapsed:-$(($(date +%s) - started))}
RSS_END=$(rss_kib)
kill "$SAMPLER" 2>/dev/null || true

statuses=$(grep -m1 '^soak-statuses' "$BENCH_TMP/wrk.log" || true)
[[ -n "$statuses" ]] || { cat "$BENCH_TMP/wrk.log" >&2; die "wrk did not report statuses (did it reach $SOAK_REQUESTS within ${MAX_SECS}s?)"; }
five_xx=$(tr ' ' '\n' <<<"$statuses" | awk -F= '$1 ~ /^5[0-9][0-9]$/ { n += $2 } END { print n + 0 }')
ok_2xx=$(tr ' ' '\n' <<<"$statuses" | awk -F= '$1 ~ /^2[0-9][0-9]$/ { n += $2 } END { print n + 0 }')
samples=$(wc -l <"$BENCH_TMP/rss.log")
RSS_MID=$(sed -n "$(((samples + 1) / 2))p" "$BENCH_TMP/rss.log")
RSS_MAX=$(sort -n "$BENCH_TMP/rss.log" | tail -1)
# A request reached the backend without a valid identity if it carries no X-User-Id, or one that is
# not the token's user (alice), or a path whose user segment is not that user.
backend_total=$(wc -l <"$BENCH_TMP/backend-access.log")
violations=$(awk -F'|' '{ split($2, seg, "/"); if ($1 != "alice" || seg[3] != "alice") n++ } END { print n + 0 }' "$BENCH_TMP/backend-access.log")

cat <<REPORT

## authgate soak, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT_DIR" && git rev-parse --short HEAD 2>/dev/null || echo '?')

| measure | value |
|---|---|
| requests answered | $(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$statuses") in ${elapsed}s (${CONNS} connections) |
| answers by status | ${statuses#soak-statuses } |
| wrk | $(grep -m1 '^soak-summary' "$BENCH_TMP/wrk.log" | sed 's/^soak-summary //') |
| 5xx answers (must be 0) | $five_xx |
| requests that reached the backend | $backend_total (2xx answers counted: $ok_2xx; the difference was in flight when counting stopped) |
| reached the backend without a valid identity (must be 0) | $violations |
| authgate RSS start / middle / end (max) | ${RSS_START} / ${RSS_MID} / ${RSS_END} KiB (max ${RSS_MAX}) |
REPORT
((five_xx == 0)) || die "5xx answers during the soak"
((violations == 0)) || die "requests reached the backend without a valid identity"
