#!/usr/bin/env bash
# Side-by-side throughput and latency of the same request through each target, in one run:
#   direct          nginx backend on :18080 returning a small JSON body (the ceiling)
#   nginx           nginx plain reverse proxy, no auth, :18082 (what a proxy hop costs at best)
#   haproxy         HAProxy doing authgate's work (HS256 jwt_verify, exp, X-User-Id, owner 403), :18081
#   authgate-hs256  authgate with an HS256 token, :18083
#   authgate-limit-local  authgate-hs256 plus a per-user limit decided in process, :18087
#   authgate-limit-redis  the same limit decided in a redis-server on this machine ([store]), :18088
#                   (Redis on :18089; its CPU per request goes into the report)
#   authgate-access  authgate-hs256 with its default JSON access log on (to a file), :18092: what
#                   authgate's own access log costs, in the report against authgate-hs256
#   authgate-session  authgate-hs256's routes taking a Better Auth session cookie instead, :18090,
#                   with a real Better Auth server (tests/better-auth, npm) on :18091
#   nginx-log       nginx (as above) with a JSON access log to a file, :18093
#   haproxy-log     haproxy (as above) with `option httplog` to a file, :18094: with authgate-access,
#                   the logs-on table, in the same run as the logs-off one
# Load: wrk -t1, keep-alive, GET /api/USER/tasks with USER's credential (alice's HS256 or EdDSA
# token, or the session cookie of a user signed up with Better Auth), for each connection count in
# CONNS, ROUNDS rounds that alternate between the targets, SECS seconds per run.
# Writes bench/results/<date>-compare.md and prints it. See bench/README.md.
#
# env: SECS (5)  ROUNDS (3)  CONNS ("1 32 256")  AUTHGATE_BIN (default: cargo build --release)
#      AUTHGATE_WORKERS (unset: authgate's default)  AUTHGATE_PIN (true/false; unset: default)
#      TARGETS (unset: all; e.g. "nginx authgate-hs256")
#      WARMUP (1 s per target)  KEEP_TMP=1 (keep logs)
#      HYPER_BARE_BIN: a built ../shared/peers/hyper-bare (the thinnest pooled hyper 1 proxy, no
#      auth), added as the calibration target "hyper-bare" on :18084 when set
#      ACCESS_LOG=1: every target logs each request to a file, as production does: nginx with a
#      JSON log_format, HAProxy with `option httplog` (to its stdout, a file), authgate with its
#      default JSON access log (its stderr, a file); default 0: no target logs requests
#      WITH_TLS (1 when TARGETS is unset, else 0): afterwards, authgate over TLS against HAProxy
#      terminating TLS, by bench/tls.sh with the same SECS, ROUNDS and AUTHGATE_BIN (its own report)
set -euo pipefail

# The TLS comparison runs once this one has stopped everything it started (they share the backend
# port): this script runs itself without it, then hands over to tls.sh.
if [[ "${WITH_TLS:-$([[ -z "${TARGETS:-}" ]] && echo 1 || echo 0)}" == 1 ]]; then
  WITH_TLS=0 bash "${BASH_SOURCE[0]}" "$@" || exit $?
  echo
  echo "== authgate over TLS against HAProxy terminating TLS (bench/tls.sh)"
  exec bash "$(dirname "${BASH_SOURCE[0]}")/tls.sh"
fi

# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"1 32 256"}
WARMUP=${WARMUP:-1}
for v in SECS ROUNDS WARMUP; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number of seconds/rounds"; done
((SECS >= 1 && ROUNDS >= 1)) || die "SECS and ROUNDS must be at least 1"
read -r -a CONN_LIST <<<"$CONNS"
((${#CONN_LIST[@]})) || die "CONNS is empty"
for c in "${CONN_LIST[@]}"; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONNS: '$c' is not a positive integer"; done

# ---------------------------------------------------------------------------------------------
# The targets. One line each: NAME  URL-BASE  CREDENTIAL  START-FUNCTION  AUTH(yes|no)
# CREDENTIAL names two variables: CREDENTIAL_HEADER (the header wrk sends) and CREDENTIAL_USER
# (whose tasks it asks for). AUTH=yes also checks that the backend sees that user even when the
# client sends another X-User-Id, that GET /api/bob/tasks with it is 403, and that no credential
# is 401.
# A name starting with "authgate" gets ratio rows against haproxy, nginx and direct.
ALL_TARGETS=(
  "direct          http://127.0.0.1:18080  HS256  start_direct          no"
  "nginx           http://127.0.0.1:18082  HS256  start_nginx_proxy     no"
  "haproxy         http://127.0.0.1:18081  HS256  start_haproxy         yes"
  "authgate-hs256  http://127.0.0.1:18083  HS256  start_authgate_hs256  yes"
  "authgate-eddsa  http://127.0.0.1:18085  EDDSA  start_authgate_eddsa  yes"
  "authgate-limit-local  http://127.0.0.1:18087  HS256  start_authgate_limit_local  yes"
  "authgate-limit-redis  http://127.0.0.1:18088  HS256  start_authgate_limit_redis  yes"
  "authgate-session  http://127.0.0.1:18090  SESSION  start_authgate_session  yes"
  "authgate-access  http://127.0.0.1:18092  HS256  start_authgate_access  yes"
  "nginx-log       http://127.0.0.1:18093  HS256  start_nginx_log       no"
  "haproxy-log     http://127.0.0.1:18094  HS256  start_haproxy_log     yes"
  # TLS runs (authgate and HAProxy terminating TLS, h1/h2/handshakes) live in bench/tls.sh.
)
if [[ -n "${HYPER_BARE_BIN:-}" ]]; then
  [[ -x $HYPER_BARE_BIN ]] || die "HYPER_BARE_BIN=$HYPER_BARE_BIN is not an executable"
  ALL_TARGETS+=("hyper-bare      http://127.0.0.1:18084  HS256  start_hyper_bare      no")
fi

# The start functions: each brings its target up and returns once it accepts connections.
# The backend (direct) is started first, whatever TARGETS says, since every other target uses it.
start_direct() { :; }
# nginx_proxy NAME PORT LOG(0|1): the nginx plain proxy on PORT, with LOG=1 one JSON access-log
# line per request (the fields authgate logs) to a file, buffered as a production setup would.
nginx_proxy() {
  local name=$1 port=$2 config=$BENCH_TMP/$1.conf
  sed "s/127.0.0.1:18082/127.0.0.1:$port/" "$BENCH_DIR/nginx-proxy.conf" >"$config"
  grep -q "127.0.0.1:$port" "$config" || die "could not set nginx's port in $config"
  if [[ $3 == 1 ]]; then
    sed -i "s|access_log off;|log_format json escape=json '{\"time\":\"\$time_iso8601\",\"request_id\":\"\$request_id\",\"client_ip\":\"\$remote_addr\",\"method\":\"\$request_method\",\"path\":\"\$uri\",\"status\":\$status,\"upstream_ms\":\"\$upstream_response_time\",\"total_ms\":\$request_time}'; access_log $BENCH_TMP/$name-access.log json buffer=64k flush=1s;|" \
      "$config"
    grep -q 'access_log .*json' "$config" || die "could not turn nginx's access log on"
  fi
  start_nginx "$name" "$config" "$port"
}
# haproxy_proxy NAME PORT LOG(0|1): HAProxy doing authgate's work on PORT, with LOG=1 httplog
# lines to its stdout, which spawn sends to a file.
haproxy_proxy() {
  local name=$1 port=$2 config=$BENCH_TMP/$1.cfg
  sed "s/^  bind 127.0.0.1:18081\$/  bind 127.0.0.1:$port/" "$BENCH_DIR/haproxy.cfg" >"$config"
  grep -q "bind 127.0.0.1:$port" "$config" || die "could not set HAProxy's port in $config"
  if [[ $3 == 1 ]]; then
    sed -i -e 's/^global$/global\n  log stdout format raw local0/' -e 's/^defaults$/defaults\n  log global\n  option httplog/' "$config"
    grep -q 'option httplog' "$config" || die "could not turn HAProxy's access log on"
  fi
  JWT_SECRET=$BENCH_SECRET haproxy -c -f "$config" >"$BENCH_TMP/$name-check.log" 2>&1 ||
    { cat "$BENCH_TMP/$name-check.log" >&2; die "haproxy rejected $config"; }
  spawn "$name" env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$config"
  wait_port "$port" "$SPAWNED_PID" "$name"
}
start_nginx_proxy() { nginx_proxy nginx-proxy 18082 "${ACCESS_LOG:-0}"; }
start_haproxy() { haproxy_proxy haproxy 18081 "${ACCESS_LOG:-0}"; }
# Access logs on, in the same run as the targets above without them (compare with authgate-access).
start_nginx_log() { nginx_proxy nginx-log 18093 1; }
start_haproxy_log() { haproxy_proxy haproxy-log 18094 1; }
start_authgate_hs256() { start_authgate authgate-hs256; }
# authgate-hs256 with its default JSON access log on, to its stderr (a file).
start_authgate_access() {
  port_free_or_die 18092
  local config=$BENCH_TMP/gateway-access.toml
  sed -e 's/127.0.0.1:18083/127.0.0.1:18092/' -e 's/^access = false/access = true/' "$AUTHGATE_CONFIG" >"$config"
  grep -q '^access = true' "$config" || die "could not turn authgate's access log on in $config"
  spawn authgate-access env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$config"
  wait_port 18092 "$SPAWNED_PID" authgate-access
}
start_hyper_bare() {
  port_free_or_die 18084
  spawn hyper-bare "$HYPER_BARE_BIN" 127.0.0.1:18084 127.0.0.1:18080
  wait_port 18084 "$SPAWNED_PID" hyper-bare
}
# authgate verifying Better Auth-style EdDSA tokens whose key comes from a JWKS served on :18086.
start_authgate_eddsa() {
  port_free_or_die 18086
  spawn jwks-server python3 -m http.server 18086 --bind 127.0.0.1 --directory "$BENCH_TMP/jwks"
  wait_port 18086 "$SPAWNED_PID" jwks-server
  local config=$BENCH_TMP/gateway-eddsa.toml
  sed -e 's/127.0.0.1:18083/127.0.0.1:18085/' \
      -e 's|^algorithms = .*|algorithms = ["EdDSA"]\njwks_url = "http://127.0.0.1:18086/jwks.json"\nissuer = "http://127.0.0.1:3000"\naudience = "http://127.0.0.1:3000"|' \
      -e '/^secret_env/d' "$AUTHGATE_CONFIG" >"$config"
  "$AUTHGATE_BIN" check --config "$config" >"$BENCH_TMP/check-eddsa.log" 2>&1 ||
    { cat "$BENCH_TMP/check-eddsa.log" >&2; die "authgate check rejected $config"; }
  spawn authgate-eddsa "$AUTHGATE_BIN" --config "$config"
  wait_port 18085 "$SPAWNED_PID" authgate-eddsa
}
# authgate with a per-user limit high enough never to refuse: what the decision costs, in process
# or through Redis. The same config but for [store].
limited_config() { # PORT OUT [STORE-TABLE]
  sed -e "s/127.0.0.1:18083/127.0.0.1:$1/" "$AUTHGATE_CONFIG" >"$2"
  printf '\n[rate_limit]\nper_user = "1000000/s"\n' >>"$2"
  if [[ -n "${3:-}" ]]; then printf '\n[store]\n%s\n' "$3" >>"$2"; fi
  BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$2" >"$2.check.log" 2>&1 ||
    { cat "$2.check.log" >&2; die "authgate check rejected $2"; }
}
start_authgate_limit_local() {
  port_free_or_die 18087
  limited_config 18087 "$BENCH_TMP/gateway-limit-local.toml"
  spawn authgate-limit-local env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$BENCH_TMP/gateway-limit-local.toml"
  wait_port 18087 "$SPAWNED_PID" authgate-limit-local
}
start_authgate_limit_redis() {
  port_free_or_die 18088 18089
  need_tools redis-server
  spawn redis redis-server --port 18089 --bind 127.0.0.1 --save "" --appendonly no
  REDIS_PID=$SPAWNED_PID
  wait_port 18089 "$REDIS_PID" redis
  limited_config 18088 "$BENCH_TMP/gateway-limit-redis.toml" 'redis_url = "redis://127.0.0.1:18089/0"'
  spawn authgate-limit-redis env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$BENCH_TMP/gateway-limit-redis.toml"
  wait_port 18088 "$SPAWNED_PID" authgate-limit-redis
}
# authgate taking Better Auth session cookies (the same routes), in front of a real Better Auth
# server (tests/better-auth/server.mjs) signing with the bench secret; a user signed up there
# brings the cookie and the user id the load uses.
start_authgate_session() {
  port_free_or_die 18090 18091
  need_tools node npm
  local auth_dir=$ROOT_DIR/tests/better-auth
  [[ -d $auth_dir/node_modules/better-auth ]] ||
    (cd "$auth_dir" && npm ci --no-audit --no-fund >"$BENCH_TMP/npm-ci.log" 2>&1) ||
    { cat "$BENCH_TMP/npm-ci.log" >&2; die "npm ci in tests/better-auth failed"; }
  spawn better-auth env PORT=18091 BETTER_AUTH_SECRET="$BENCH_SECRET" node "$auth_dir/server.mjs"
  wait_port 18091 "$SPAWNED_PID" better-auth
  local headers=$BENCH_TMP/sign-up.headers body
  body=$(curl -s --max-time 10 -D "$headers" -H 'Content-Type: application/json' \
    -H 'Origin: http://127.0.0.1:18091' \
    -d '{"email":"bench@example.com","password":"bench-password-123","name":"Bench"}' \
    http://127.0.0.1:18091/api/auth/sign-up/email) || die "Better Auth sign-up failed"
  SESSION_USER=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])' <<<"$body") ||
    die "Better Auth sign-up answered: ${body:0:200}"
  local cookie
  cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: \(better-auth\.session_token=[^;]*\).*/\1/p' "$headers" | tr -d '\r')
  [[ -n $cookie ]] || die "Better Auth sign-up set no session cookie"
  SESSION_HEADER="Cookie: $cookie"
  local config=$BENCH_TMP/gateway-session.toml
  sed -e 's/127.0.0.1:18083/127.0.0.1:18090/' "$AUTHGATE_CONFIG" >"$config"
  printf '\n[auth.session]\nbase_url = "http://127.0.0.1:18091"\n' >>"$config"
  BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$config" >"$config.check.log" 2>&1 ||
    { cat "$config.check.log" >&2; die "authgate check rejected $config"; }
  spawn authgate-session env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$config"
  wait_port 18090 "$SPAWNED_PID" authgate-session
}
# CPU seconds (user + system) a process has used, from /proc.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# ---------------------------------------------------------------------------------------------

TARGET_LINES=()
for line in "${ALL_TARGETS[@]}"; do
  read -r name _ <<<"$line"
  if [[ -z "${TARGETS:-}" ]] || [[ " $TARGETS " == *" $name "* ]]; then TARGET_LINES+=("$line"); fi
done
((${#TARGET_LINES[@]})) || die "TARGETS='${TARGETS:-}' selects none of the targets"
NT=${#TARGET_LINES[@]}
NC=${#CONN_LIST[@]}

# Bounded runtime: every measured run, the warm-ups, ~2 s of wrk start/stop per run, and start-up.
RUNS=$((NC * NT * ROUNDS))
EXPECTED=$((RUNS * SECS + RUNS / 2 + NT * WARMUP + 5))
CAP=${MAX_SECS:-$((EXPECTED * 2 + 60))}
printf 'authgate bench: %d target(s) x %d connection count(s) x %d round(s) x %d s  => about %d s (%dm%02ds), hard cap %d s (not counting the build)\n' \
  "$NT" "$NC" "$ROUNDS" "$SECS" "$EXPECTED" $((EXPECTED / 60)) $((EXPECTED % 60)) "$CAP"

need_tools nginx haproxy wrk curl
build_authgate
port_free_or_die 18080 18081 18082 18083 18085 18086 18087 18088 18089 18090 18091 18092 18093 18094
bench_init
raise_nofile 16384  # haproxy asks for 2 x maxconn (8000) + a few

start_watchdog "$CAP"
sample_busy
TOKEN_HS256=$(mint_token alice) || die "could not mint a token (pyjwt?)"
export TOKEN_HS256
[[ -n "${AUTHGATE_CONFIG:-}" ]] || authgate_config
if [[ ${ACCESS_LOG:-0} == 1 ]]; then
  sed -i 's/^access = false/access = true/' "$AUTHGATE_CONFIG"
  grep -q '^access = true' "$AUTHGATE_CONFIG" || die "could not turn authgate's access log on"
fi
mkdir -p "$BENCH_TMP/jwks"
TOKEN_EDDSA=$(python3 "$BENCH_DIR/mint_eddsa.py" "$BENCH_TMP/jwks/jwks.json" http://127.0.0.1:3000 alice) ||
  die "could not mint an EdDSA token (pip install 'pyjwt[crypto]')"
export TOKEN_EDDSA
HS256_HEADER="Authorization: Bearer $TOKEN_HS256" HS256_USER=alice
EDDSA_HEADER="Authorization: Bearer $TOKEN_EDDSA" EDDSA_USER=alice
# SESSION_HEADER and SESSION_USER come from start_authgate_session.

log "starting the backend and the targets"
start_backend
for line in "${TARGET_LINES[@]}"; do
  read -r name _ _ start _ <<<"$line"
  "$start"
done

# A target's credential: the header it sends and the path of its user's tasks.
credential() { # TARGET-LINE -> sets URL, HEADER, USER_PATH
  local name cred
  read -r name URL cred _ <<<"$1"
  local header_var=${cred}_HEADER user_var=${cred}_USER
  HEADER=${!header_var:-}
  [[ -n $HEADER && -n ${!user_var:-} ]] || die "$name: no credential $cred (its start function sets it)"
  USER_PATH=/api/${!user_var}/tasks
}
status_with() { # URL HEADER -> HTTP status
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -k -H "$2" "$1" || true
}

# Sanity checks before measuring; a failure prints a WARNING line and goes into the report.
for line in "${TARGET_LINES[@]}"; do
  read -r name _ _ _ auth <<<"$line"
  credential "$line"
  code=$(status_with "$URL$USER_PATH" "$HEADER")
  [[ $code == 200 ]] || warn "$name: GET $USER_PATH with its credential answered $code, expected 200"
  if [[ $auth == yes ]]; then
    # The backend echoes the X-User-Id it got: a spoofed one must be replaced by the caller's id.
    user=${USER_PATH#/api/}; user=${user%/tasks}
    body=$(curl -s -k --max-time 5 -H "$HEADER" -H 'X-User-Id: mallory' "$URL$USER_PATH" || true)
    [[ $body == *"\"user\":\"$user\""* ]] ||
      warn "$name: with a spoofed X-User-Id the backend saw: ${body:0:120} (expected \"user\":\"$user\")"
    code=$(status_with "$URL/api/bob/tasks" "$HEADER")
    [[ $code == 403 ]] || warn "$name: GET /api/bob/tasks with $user's credential answered $code, expected 403"
    code=$(http_status "$URL$USER_PATH")
    [[ $code == 401 ]] || warn "$name: GET $USER_PATH without a credential answered $code, expected 401"
  fi
done

# wrk reports through this script's done() (exact microseconds, no unit parsing); --latency also
# prints the human distribution to the raw log. A script with only done() keeps wrk's static request.
cat >"$BENCH_TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "AGBENCH requests=%d duration_us=%d p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

declare -A REDIS_CPU=()
RESULTS=$BENCH_TMP/results.tsv
printf 'conns\tround\ttarget\trps\tp50_us\tp90_us\tp99_us\tmax_us\tnon2xx\tsockerr\trequests\n' >"$RESULTS"

run_wrk() { # TARGET-LINE CONNS SECS -> prints wrk's output
  credential "$1"
  timeout --foreground --signal=INT $(($3 + 20)) \
    wrk -t1 -c"$2" -d"$3s" --latency --timeout 5s -s "$BENCH_TMP/report.lua" \
    -H "$HEADER" "$URL$USER_PATH"
}

if ((WARMUP > 0)); then
  log "warm-up: ${WARMUP}s per target at 32 connections"
  for line in "${TARGET_LINES[@]}"; do
    read -r name _ <<<"$line"
    run_wrk "$line" 32 "$WARMUP" >>"$BENCH_TMP/wrk-raw.log" 2>&1 || warn "$name: warm-up wrk failed"
  done
fi

for c in "${CONN_LIST[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for line in "${TARGET_LINES[@]}"; do
      read -r name _ <<<"$line"
      [[ $name == authgate-limit-redis ]] && redis_before=$(cpu_secs "$REDIS_PID")
      out=$(run_wrk "$line" "$c" "$SECS" 2>&1) || { warn "$name c=$c round $r: wrk failed"; echo "$out" >&2; continue; }
      if [[ $name == authgate-limit-redis ]]; then
        REDIS_CPU[$c]=$(awk -v a="${REDIS_CPU[$c]:-0}" -v b="$redis_before" -v e="$(cpu_secs "$REDIS_PID")" 'BEGIN { printf "%.3f", a + e - b }')
      fi
      printf '### c=%s round=%s target=%s\n%s\n' "$c" "$r" "$name" "$out" >>"$BENCH_TMP/wrk-raw.log"
      res=$(grep '^AGBENCH ' <<<"$out" | tail -n 1) || { warn "$name c=$c round $r: no result from wrk"; continue; }
      declare -A R=()
      for kv in ${res#AGBENCH }; do R[${kv%%=*}]=${kv#*=}; done
      requests=${R[requests]} non2xx=${R[non2xx]} sockerr=${R[sockerr]} p50_us=${R[p50_us]} p99_us=${R[p99_us]}
      rps=$(awk -v n="$requests" -v d="${R[duration_us]}" 'BEGIN { printf "%.1f", n / (d / 1e6) }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$r" "$name" "$rps" "$p50_us" "${R[p90_us]}" \
        "$p99_us" "${R[max_us]}" "$non2xx" "$sockerr" "$requests" >>"$RESULTS"
      printf '  c=%-4s round %s/%s  %-15s %10s req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %s  socket errors %s\n' \
        "$c" "$r" "$ROUNDS" "$name" "$rps" "$(awk -v u="$p50_us" 'BEGIN{print u/1000}')" \
        "$(awk -v u="$p99_us" 'BEGIN{print u/1000}')" "$non2xx" "$sockerr" >&2
      ((non2xx == 0)) || warn "$name c=$c round $r: $non2xx non-2xx/3xx responses"
      ((sockerr == 0)) || warn "$name c=$c round $r: $sockerr socket errors (connect/read/write/timeout)"
    done
  done
done

# Authgate must still be alive and still answering correctly after the load.
for line in "${TARGET_LINES[@]}"; do
  read -r name _ <<<"$line"
  credential "$line"
  code=$(status_with "$URL$USER_PATH" "$HEADER")
  [[ $code == 200 ]] || warn "$name: after the load, GET $USER_PATH answered $code, expected 200"
done

# ----- the report -----
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  commit=$(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n "$(git -C "$ROOT_DIR" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.*)"
  fi
  printf 'commit\t%s\n' "$commit"
  printf 'machine\t%s cores (nproc), kernel %s, %s\n' "$(nproc)" "$(uname -r)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  printf 'busy before\t%s%% of all cores in the second before the run (other work on the machine)\n' "$BUSY_PCT"
  printf 'loadavg at the end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'nginx\t%s\n' "$(nginx -v 2>&1 | head -n 1)"
  printf 'haproxy\t%s\n' "$(haproxy -v 2>&1 | head -n 1)"
  printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -n 1 || true)"
  printf 'access logs\t%s\n' "$([[ ${ACCESS_LOG:-0} == 1 ]] && echo 'on for every target (ACCESS_LOG=1): nginx JSON log_format to a file, HAProxy httplog to a file, authgate JSON to a file' || echo 'off (authgate-access alone logs)')"
  printf 'authgate\t%s, workers=%s, pin_workers=%s\n' "$AUTHGATE_BIN" \
    "${AUTHGATE_WORKERS:-default (one per core)}" "${AUTHGATE_PIN:-default (false)}"
  printf 'load\twrk -t1 -c{%s} -d%ss, keep-alive, GET /api/USER/tasks with USER'"'"'s credential (alice'"'"'s HS256 bearer token; EdDSA for authgate-eddsa; a Better Auth session cookie for authgate-session), %s round(s) alternating between targets, %ss warm-up each\n' \
    "$(IFS=,; echo "${CONN_LIST[*]}")" "$SECS" "$ROUNDS" "$WARMUP"
  for c in "${!REDIS_CPU[@]}"; do printf 'redis cpu c=%s\t%s\n' "$c" "${REDIS_CPU[$c]}"; done
  if ((${#BENCH_WARNINGS[@]})); then for w in "${BENCH_WARNINGS[@]}"; do printf 'warning\t%s\n' "$w"; done; fi
} >"$BENCH_TMP/meta.tsv"

mkdir -p "$BENCH_DIR/results"
base="$BENCH_DIR/results/$(date +%Y-%m-%d)-compare"
out="$base.md"
n=2
while [[ -e $out ]]; do out="$base-$n.md"; n=$((n + 1)); done
python3 "$BENCH_DIR/report.py" "$BENCH_TMP/meta.tsv" "$RESULTS" >"$out.tmp"
mv "$out.tmp" "$out"
echo
cat "$out"
echo
echo "report saved to ${out#"$ROOT_DIR"/}"
