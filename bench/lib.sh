# shellcheck shell=bash
# Shared helpers for the bench scripts (compare.sh, rss-idle.sh, startup.sh). Source it; do not run it.
# It expects `set -euo pipefail` in the caller and defines:
#   BENCH_DIR ROOT_DIR BENCH_SECRET BENCH_TMP AUTHGATE_BIN
#   bench_init, need_tools, build_authgate, port_free_or_die, wait_port, spawn, start_backend,
#   start_authgate, mint_token, raise_nofile, warn
# Every process started through `spawn` is stopped by the EXIT trap that bench_init installs,
# including on Ctrl-C and on SIGTERM.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)
BENCH_SECRET=dev-secret-change-me-0123456789abcdef
BENCH_TMP=
BENCH_PIDS=()
BENCH_WARNINGS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
warn() { BENCH_WARNINGS+=("$*"); printf 'WARNING: %s\n' "$*" >&2; }

# Stop everything we started: TERM first, then KILL whatever is still there after ~3 s.
bench_cleanup() {
  local rc=$? pid alive
  trap - EXIT INT TERM
  if ((${#BENCH_PIDS[@]})); then
    for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 30); do
      alive=0
      for pid in "${BENCH_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    for pid in "${BENCH_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
    if ((rc != 0)) || [[ "${KEEP_TMP:-0}" == 1 ]]; then
      printf 'logs kept in %s\n' "$BENCH_TMP" >&2
    else
      rm -rf "$BENCH_TMP"
    fi
  fi
  exit "$rc"
}

bench_init() {
  BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
  trap bench_cleanup EXIT
  trap 'printf "\ninterrupted\n" >&2; exit 130' INT
  trap 'printf "\nterminated\n" >&2; exit 143' TERM
}

# Start a command in the background, its output in $BENCH_TMP/<name>.log; remember its pid.
# usage: spawn NAME CMD [ARGS...]   (sets SPAWNED_PID)
spawn() {
  local name=$1; shift
  "$@" >"$BENCH_TMP/$name.log" 2>&1 &
  SPAWNED_PID=$!
  BENCH_PIDS+=("$SPAWNED_PID")
}

raise_nofile() {
  local want=$1
  if (($(ulimit -n) < want)); then
    ulimit -Hn "$want" 2>/dev/null || true
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  fi
  (($(ulimit -n) >= want)) || warn "open-file limit is $(ulimit -n), wanted $want"
}

# Install the tools the named script needs, only when one is missing.
need_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if ((${#missing[@]})); then
    log "missing: ${missing[*]}; installing nginx-light haproxy wrk with apt-get"
    [[ $(id -u) == 0 ]] || die "need root to apt-get install nginx-light haproxy wrk (or install them yourself)"
    # Packages must not start their system services (nginx on :80): deny them while installing,
    # unless the machine already has a policy (Debian container images usually do).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
    local rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light haproxy wrk; } >&2 || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install failed (rc=$rc)"
    for t in "${missing[@]}"; do command -v "$t" >/dev/null 2>&1 || die "$t still missing after apt-get install"; done
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is required"
  if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
    log "installing pyjwt[crypto]"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q 'pyjwt[crypto]' >&2 || die "pip install pyjwt[crypto] failed"
  fi
}

# Sets AUTHGATE_BIN: the caller's, or a fresh `cargo build --release` from the repo root.
build_authgate() {
  if [[ -n "${AUTHGATE_BIN:-}" ]]; then
    [[ -x "$AUTHGATE_BIN" ]] || die "AUTHGATE_BIN=$AUTHGATE_BIN is not an executable"
    AUTHGATE_BIN=$(cd "$(dirname "$AUTHGATE_BIN")" && pwd)/$(basename "$AUTHGATE_BIN")
  else
    log "cargo build --release (set AUTHGATE_BIN to skip)"
    (cd "$ROOT_DIR" && cargo build --release >&2) || die "cargo build --release failed"
    AUTHGATE_BIN=$ROOT_DIR/target/release/authgate
  fi
}

# Fail clearly when something already listens on a port we are about to bind. A connect test, not a
# bind test: our servers use SO_REUSEPORT and would otherwise share the port with a stale listener.
port_free_or_die() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "port 127.0.0.1:$p is already in use (a previous run still alive? see: ss -ltnp 'sport = :$p')"
    fi
  done
}

# Wait until 127.0.0.1:PORT accepts a connection, while PID lives; at most TIMEOUT s (default 10).
wait_port() {
  local port=$1 pid=$2 name=$3 timeout=${4:-10}
  for _ in $(seq $((timeout * 20))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$BENCH_TMP/$name.log" >&2 2>/dev/null || true
      die "$name exited before listening on :$port"
    fi
    sleep 0.05
  done
  tail -n 20 "$BENCH_TMP/$name.log" >&2 2>/dev/null || true
  die "$name is not listening on :$port after ${timeout}s"
}

# nginx in the foreground (daemon off) so that its master is our child; pid/error log in BENCH_TMP.
start_nginx() {
  local name=$1 conf=$2 port=$3
  spawn "$name" nginx -c "$conf" -e "$BENCH_TMP/$name.err" \
    -g "daemon off; pid $BENCH_TMP/$name.pid;"
  wait_port "$port" "$SPAWNED_PID" "$name"
}

# With CLIENT_CPUS set (a taskset CPU list), the backend runs on those CPUs, beside the load
# generator, so that the proxy under test has the other CPUs to itself.
start_backend() {
  if [[ -n "${CLIENT_CPUS:-}" ]]; then
    spawn nginx-backend taskset -c "$CLIENT_CPUS" nginx -c "$BENCH_DIR/nginx-backend.conf" \
      -e "$BENCH_TMP/nginx-backend.err" -g "daemon off; pid $BENCH_TMP/nginx-backend.pid;"
    wait_port 18080 "$SPAWNED_PID" nginx-backend
  else
    start_nginx nginx-backend "$BENCH_DIR/nginx-backend.conf" 18080
  fi
}

# Writes the config to use into AUTHGATE_CONFIG: bench/gateway.bench.toml, plus
# `workers = $AUTHGATE_WORKERS` and `pin_workers = $AUTHGATE_PIN` under [server] when set.
authgate_config() {
  AUTHGATE_CONFIG=$BENCH_TMP/gateway.toml
  cp "$BENCH_DIR/gateway.bench.toml" "$AUTHGATE_CONFIG"
  if [[ -n "${AUTHGATE_WORKERS:-}" ]]; then
    [[ "$AUTHGATE_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "AUTHGATE_WORKERS must be a positive integer"
    sed -i "/^\[server\]/a workers = $AUTHGATE_WORKERS" "$AUTHGATE_CONFIG"
    grep -q "^workers = $AUTHGATE_WORKERS\$" "$AUTHGATE_CONFIG" || die "could not set workers in $AUTHGATE_CONFIG"
  fi
  if [[ -n "${AUTHGATE_PIN:-}" ]]; then
    [[ "$AUTHGATE_PIN" =~ ^(true|false)$ ]] || die "AUTHGATE_PIN must be true or false"
    sed -i "/^\[server\]/a pin_workers = $AUTHGATE_PIN" "$AUTHGATE_CONFIG"
    grep -q "^pin_workers = $AUTHGATE_PIN\$" "$AUTHGATE_CONFIG" || die "could not set pin_workers in $AUTHGATE_CONFIG"
  fi
  BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$AUTHGATE_CONFIG" >"$BENCH_TMP/check.log" 2>&1 ||
    { cat "$BENCH_TMP/check.log" >&2; die "authgate check rejected $AUTHGATE_CONFIG"; }
}

# Sets AUTHGATE_PID.
start_authgate() {
  local name=${1:-authgate}
  [[ -n "${AUTHGATE_CONFIG:-}" ]] || authgate_config
  spawn "$name" env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$AUTHGATE_CONFIG"
  AUTHGATE_PID=$SPAWNED_PID
  wait_port 18083 "$AUTHGATE_PID" "$name"
}

# An HS256 token for SUB (default alice), exp in 1 h: bench/mint.py (pyjwt), else `authgate token`.
mint_token() {
  python3 "$BENCH_DIR/mint.py" "$BENCH_SECRET" "${1:-alice}" "${2:-3600}" 2>/dev/null && return 0
  [[ -n "${AUTHGATE_CONFIG:-}" ]] || authgate_config
  BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" token --config "$AUTHGATE_CONFIG" --sub "${1:-alice}" --ttl "${2:-3600}s"
}

# HTTP status of GET URL, with an optional bearer token.
http_status() {
  local url=$1 tok=${2:-} args=(-s -o /dev/null -w '%{http_code}' --max-time 5 -k)
  [[ -n "$tok" ]] && args+=(-H "Authorization: Bearer $tok")
  curl "${args[@]}" "$url" || true
}

# Watchdog: after CAP seconds, terminate this script (its EXIT trap stops everything it started).
# It checks once a second whether we are gone, so it never outlives us by more than a second.
# usage: start_watchdog CAP  (after bench_init)
start_watchdog() {
  local cap=$1
  (
    trap - EXIT INT TERM
    end=$((SECONDS + cap))
    while ((SECONDS < end)); do sleep 1; kill -0 $$ 2>/dev/null || exit 0; done
    echo "bench: hard cap of ${cap}s reached, stopping" >&2
    kill -TERM $$ 2>/dev/null
  ) &
  BENCH_PIDS+=($!)
}

# Other work on the machine skews everything: samples the CPU for a second, sets BUSY_PCT (all
# cores) and warns above 20%.
sample_busy() {
  local total0 idle0 total1 idle1
  cpu_sample() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
  read -r total0 idle0 < <(cpu_sample)
  sleep 1
  read -r total1 idle1 < <(cpu_sample)
  BUSY_PCT=$(awk -v t=$((total1 - total0)) -v i=$((idle1 - idle0)) 'BEGIN { printf "%.0f", t ? 100 * (t - i) / t : 0 }')
  ((BUSY_PCT <= 20)) || warn "the machine was ${BUSY_PCT}% busy (all cores) in the second before the run: expect noise"
}
