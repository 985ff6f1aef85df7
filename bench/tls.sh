#!/usr/bin/env bash
# TLS side by side: authgate terminating TLS itself next to HAProxy terminating TLS with the same
# certificate, both doing the same JWT work in front of the same nginx backend (:18080).
#   authgate  https://127.0.0.1:18443  bench/gateway.bench.toml + [server.tls]
#             http://127.0.0.1:18083   (plain measures only) bench/gateway.bench.toml
#   haproxy   https://127.0.0.1:18444  bench/haproxy.cfg with `bind ... ssl crt <pem> alpn h2,http/1.1`
#             http://127.0.0.1:18081   (plain measures only) bench/haproxy.cfg
# With PIN_ARMS=1 authgate runs twice, side by side in the same rounds: authgate-pinned
# (pin_workers = true: 18443, 18083) and authgate-unpinned (pin_workers = false: 18445, 18085).
# With CLIENT_CPUS=LIST (a taskset CPU list, e.g. 1) the load generators and the backend run on
# those CPUs only, so the proxies' workers do not share their CPUs with the client unless the
# proxies put them there; the proxies themselves are never restricted.
# The certificate is made with openssl in the temp dir at every run (KEY=ec: P-256, KEY=rsa:
# RSA-2048); no key is kept.
#
# Measurements (each round runs every target once, in turn; SECS seconds per run):
#   h1         wrk -t1 -c$CONNS, keep-alive requests over TLS, HTTP/1.1 (wrk offers no ALPN)
#   h2         h2load -t1 -c$CONNS -m$STREAMS, keep-alive requests over TLS, HTTP/2 (ALPN h2)
#   resumed    wrk -t1 -c$CONNS with `Connection: close`: a new TCP+TLS connection per request; wrk
#              keeps the TLS session, so these are resumed (abbreviated) handshakes
#   full       $FULL_CLIENTS parallel `openssl s_time -new`: a full handshake per connection, one
#              unauthenticated GET each (401 from both targets; the handshake dominates)
#   plain      wrk -t1 -c$CONNS, keep-alive requests over plain HTTP/1.1 (no TLS)
#   plain-new  wrk -t1 -c$CONNS with `Connection: close` over plain HTTP: a new TCP connection per
#              request
# Writes bench/results/<date>-tls.md (<date>-tls-rsa.md with KEY=rsa) and prints it. Bounded: a watchdog stops everything after
# MAX_SECS (default: twice the expected time plus a minute).
#
# env: SECS (5)  ROUNDS (2)  CONNS (32)  STREAMS (10)  FULL_CLIENTS (2)  KEY (ec|rsa, ec)
#      MEASURES ("h1 h2 resumed full"; also plain, plain-new)  AUTHGATE_BIN  AUTHGATE_WORKERS
#      AUTHGATE_PIN (ignored with PIN_ARMS=1)  PIN_ARMS (0)  CLIENT_CPUS  KEEP_TMP=1
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-10}
FULL_CLIENTS=${FULL_CLIENTS:-2}
KEY=${KEY:-ec}
MEASURES=${MEASURES:-"h1 h2 resumed full"}
PATH_OK=/api/alice/tasks
for v in SECS ROUNDS CONNS STREAMS FULL_CLIENTS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number"
done
[[ $KEY == ec || $KEY == rsa ]] || die "KEY must be ec or rsa"
read -r -a MEASURE_LIST <<<"$MEASURES"
for m in "${MEASURE_LIST[@]}"; do
  [[ " h1 h2 resumed full plain plain-new " == *" $m "* ]] || die "MEASURES: unknown measure '$m'"
done
PLAIN=0
[[ " $MEASURES " == *" plain"* ]] && PLAIN=1
PIN_ARMS=${PIN_ARMS:-0}
[[ $PIN_ARMS == 0 || $PIN_ARMS == 1 ]] || die "PIN_ARMS must be 0 or 1"
# The load generators (and, in lib.sh, the backend) on CLIENT_CPUS when set.
CLIENT=()
if [[ -n "${CLIENT_CPUS:-}" ]]; then
  command -v taskset >/dev/null || die "CLIENT_CPUS needs taskset (util-linux)"
  taskset -c "$CLIENT_CPUS" true 2>/dev/null || die "CLIENT_CPUS=$CLIENT_CPUS is not a CPU list taskset accepts here"
  CLIENT=(taskset -c "$CLIENT_CPUS")
fi
# name, TLS port, plain port, pin_workers (- for HAProxy, "default" for authgate's default)
if [[ $PIN_ARMS == 1 ]]; then
  TARGETS=(
    "authgate-pinned 18443 18083 true"
    "authgate-unpinned 18445 18085 false"
    "haproxy 18444 18081 -"
  )
else
  TARGETS=(
    "authgate 18443 18083 ${AUTHGATE_PIN:-default}"
    "haproxy 18444 18081 -"
  )
fi
NT=${#TARGETS[@]}
NM=${#MEASURE_LIST[@]}
EXPECTED=$((NM * NT * ROUNDS * (SECS + 2) + 20))
CAP=${MAX_SECS:-$((EXPECTED * 2 + 60))}
printf 'authgate TLS bench: %d measure(s) x %d targets x %d round(s) x %d s => about %d s, hard cap %d s (not counting the build)\n' \
  "$NM" "$NT" "$ROUNDS" "$SECS" "$EXPECTED" "$CAP"

need_tools nginx haproxy wrk curl openssl
if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) == 0 ]] || die "need GNU time at /usr/bin/time (apt-get install time)"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time; } >&2 || die "apt-get install time failed"
fi
if ! command -v h2load >/dev/null 2>&1; then
  log "h2load missing; installing nghttp2-client with apt-get"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client >&2; }; } ||
    warn "could not install nghttp2-client: the h2 runs are skipped"
fi
build_authgate
port_free_or_die 18080 18443 18444 18445 18081 18083 18085
bench_init
raise_nofile 16384

start_watchdog "$CAP"
sample_busy

# ----- the certificate (the same PEM for both) -----
TLS_DIR=$BENCH_TMP/tls
mkdir -p "$TLS_DIR"
if [[ $KEY == ec ]]; then key_args=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); else key_args=(-newkey rsa:2048); fi
openssl req -x509 "${key_args[@]}" -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$BENCH_TMP/openssl-req.log" 2>&1 ||
  { cat "$BENCH_TMP/openssl-req.log" >&2; die "openssl could not make the bench certificate"; }
cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
CERT_DESC=$(openssl x509 -in "$TLS_DIR/cert.pem" -noout -text | sed -n 's/^ *Public Key Algorithm: //p; s/^ *Public-Key: //p' | paste -sd' ' -)

# ----- the targets -----
TOKEN=$(mint_token alice) || die "could not mint a token (pyjwt?)"
# authgate_variant NAME PORT PIN TLS(0|1): writes $BENCH_TMP/NAME.toml, checks it, starts authgate.
authgate_variant() {
  local name=$1 port=$2 pin=$3 tls=$4 config=$BENCH_TMP/$1.toml
  {
    sed "s/127.0.0.1:18083/127.0.0.1:$port/" "$BENCH_DIR/gateway.bench.toml" |
      if [[ -n "${AUTHGATE_WORKERS:-}" ]]; then sed "/^\[server\]/a workers = $AUTHGATE_WORKERS"; else cat; fi |
      if [[ $pin != default ]]; then sed "/^\[server\]/a pin_workers = $pin"; else cat; fi
    if [[ $tls == 1 ]]; then
      printf '\n[server.tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
    fi
    # The `full` runs send no token from one address: authgate's brute-force guard would answer 429
    # for a minute afterwards (HAProxy has no such guard). It is not what is measured here.
    printf '\n[rate_limit]\nauth_failures = "off"\n'
  } >"$config"
  [[ -z "${AUTHGATE_WORKERS:-}" ]] || grep -q "^workers = $AUTHGATE_WORKERS\$" "$config" ||
    die "could not set workers in $config"
  [[ $pin == default ]] || grep -q "^pin_workers = $pin\$" "$config" || die "could not set pin_workers in $config"
  grep -q "127.0.0.1:$port" "$config" || die "could not set the listen port in $config"
  BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$config" >"$BENCH_TMP/check-$name.log" 2>&1 ||
    { cat "$BENCH_TMP/check-$name.log" >&2; die "authgate check rejected $config"; }
  spawn "$name" env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$config"
  wait_port "$port" "$SPAWNED_PID" "$name"
}
HAPROXY_TLS_CONFIG=$BENCH_TMP/haproxy-tls.cfg
sed "s|^  bind 127.0.0.1:18081\$|  bind 127.0.0.1:18444 ssl crt $TLS_DIR/haproxy.pem alpn h2,http/1.1|" \
  "$BENCH_DIR/haproxy.cfg" >"$HAPROXY_TLS_CONFIG"
grep -q '18444 ssl crt' "$HAPROXY_TLS_CONFIG" || die "could not put the TLS bind line into the HAProxy config"

log "starting the backend${CLIENT_CPUS:+ (on CPUs $CLIENT_CPUS)}, then the targets"
start_backend
for line in "${TARGETS[@]}"; do
  read -r name tls_port plain_port pin <<<"$line"
  [[ $pin == - ]] && continue
  authgate_variant "$name-tls" "$tls_port" "$pin" 1
  if ((PLAIN)); then authgate_variant "$name-plain" "$plain_port" "$pin" 0; fi
done
JWT_SECRET=$BENCH_SECRET haproxy -c -f "$HAPROXY_TLS_CONFIG" >"$BENCH_TMP/haproxy-check.log" 2>&1 ||
  { cat "$BENCH_TMP/haproxy-check.log" >&2; die "haproxy rejected the TLS config"; }
spawn haproxy-tls env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$HAPROXY_TLS_CONFIG"
wait_port 18444 "$SPAWNED_PID" haproxy-tls
if ((PLAIN)); then
  spawn haproxy-plain env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$BENCH_DIR/haproxy.cfg"
  wait_port 18081 "$SPAWNED_PID" haproxy-plain
fi

# ----- sanity checks over TLS: the answers must be right before anything is timed -----
for line in "${TARGETS[@]}"; do
  read -r name tls_port _ <<<"$line"
  curl_tls=(-s --max-time 5 --cacert "$TLS_DIR/cert.pem" --resolve "localhost:$tls_port:127.0.0.1")
  host_url="https://localhost:$tls_port"
  code=$(curl "${curl_tls[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$host_url$PATH_OK" || true)
  [[ $code == 200 ]] || warn "$name: GET $PATH_OK with alice's token over TLS answered $code, expected 200"
  got=$(curl "${curl_tls[@]}" --http2 -o /dev/null -w '%{http_code} %{http_version}' -H "Authorization: Bearer $TOKEN" "$host_url$PATH_OK" || true)
  [[ $got == "200 2" ]] || warn "$name: the same over HTTP/2 answered '$got', expected '200 2'"
  body=$(curl "${curl_tls[@]}" -H "Authorization: Bearer $TOKEN" -H 'X-User-Id: mallory' "$host_url$PATH_OK" || true)
  [[ $body == *'"user":"alice"'* ]] || warn "$name: with a spoofed X-User-Id the backend saw: ${body:0:120}"
  code=$(curl "${curl_tls[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$host_url/api/bob/tasks" || true)
  [[ $code == 403 ]] || warn "$name: GET /api/bob/tasks with alice's token answered $code, expected 403"
  code=$(curl "${curl_tls[@]}" -o /dev/null -w '%{http_code}' "$host_url$PATH_OK" || true)
  [[ $code == 401 ]] || warn "$name: GET $PATH_OK without a token answered $code, expected 401"
done

cat >"$BENCH_TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "AGBENCH requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

RESULTS=$BENCH_TMP/results.tsv
printf 'measure\tround\ttarget\trate\tp50_us\tp99_us\tfailed\tclient_cpu\n' >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; printf '  %-8s round %s  %-13s %10s /s  (p50 %s us, p99 %s us, failed %s, client CPU %s%%)\n' "$@" >&2; }

# The load generator's CPU time over the run, as % of one core (user + system, GNU time): wrk and
# h2load are single-threaded, so near 100 they, not the target, set the rate.
CLIENT_TIME=$BENCH_TMP/client.time
client_cpu() { awk -v secs="$SECS" '{ printf "%.0f", ($1 + $2) * 100 / secs }' "$CLIENT_TIME" 2>/dev/null || echo -; }

run_wrk() { # MEASURE ROUND NAME URL [extra wrk args...]
  local m=$1 r=$2 name=$3 url=$4; shift 4
  local out res
  out=$(timeout --foreground --signal=INT $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$CLIENT_TIME" "${CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency --timeout 5s \
    -s "$BENCH_TMP/report.lua" -H "Authorization: Bearer $TOKEN" "$@" "$url$PATH_OK" 2>&1) ||
    { warn "$name $m round $r: wrk failed"; return 0; }
  printf '### %s round=%s target=%s\n%s\n' "$m" "$r" "$name" "$out" >>"$BENCH_TMP/raw.log"
  res=$(grep '^AGBENCH ' <<<"$out" | tail -n 1) || { warn "$name $m round $r: no result from wrk"; return 0; }
  declare -A R=()
  for kv in ${res#AGBENCH }; do R[${kv%%=*}]=${kv#*=}; done
  local rate failed
  rate=$(awk -v n="${R[requests]}" -v d="${R[duration_us]}" 'BEGIN { printf "%.1f", n / (d / 1e6) }')
  failed=$((R[non2xx] + R[sockerr]))
  ((failed == 0)) || warn "$name $m round $r: ${R[non2xx]} non-2xx, ${R[sockerr]} socket errors"
  record "$m" "$r" "$name" "$rate" "${R[p50_us]}" "${R[p99_us]}" "$failed" "$(client_cpu)"
}

run_h2load() { # ROUND NAME URL
  local r=$1 name=$2 url=$3 out rate failed f_n e_n x_n c4 c5
  command -v h2load >/dev/null 2>&1 || return 0
  out=$(timeout --foreground $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$CLIENT_TIME" "${CLIENT[@]}" h2load -t1 -c"$CONNS" -m"$STREAMS" -D"$SECS" \
    -H "authorization: Bearer $TOKEN" "$url$PATH_OK" 2>&1) || { warn "$name h2 round $r: h2load failed"; echo "$out" >&2; return 0; }
  printf '### h2 round=%s target=%s\n%s\n' "$r" "$name" "$out" >>"$BENCH_TMP/raw.log"
  rate=$(sed -n 's/^finished in [0-9.]*[a-z]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  # requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout
  read -r f_n e_n x_n < <(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3/p' <<<"$out") || true
  # status codes: A 2xx, B 3xx, C 4xx, D 5xx
  read -r c4 c5 < <(sed -n 's/^status codes: [0-9]* 2xx, [0-9]* 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2/p' <<<"$out") || true
  [[ -n $rate && -n ${f_n:-} && -n ${c4:-} ]] || { warn "$name h2 round $r: could not read h2load's summary"; return 0; }
  failed=$((f_n + e_n + x_n + c4 + c5))
  ((failed == 0)) || warn "$name h2 round $r: $failed requests failed, errored, timed out or were not 2xx"
  record h2 "$r" "$name" "$rate" - - "$failed" "$(client_cpu)"
}

run_full() { # ROUND NAME PORT: FULL_CLIENTS parallel s_time -new for SECS, connections per wall second
  local r=$1 name=$2 port=$3 i start end total=0 n
  local pids=()
  start=$(date +%s.%N)
  for i in $(seq "$FULL_CLIENTS"); do
    timeout $((SECS + 20)) "${CLIENT[@]}" openssl s_time -connect "127.0.0.1:$port" -new -time "$SECS" -www "$PATH_OK" \
      >"$BENCH_TMP/s_time-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  end=$(date +%s.%N)
  for i in $(seq "$FULL_CLIENTS"); do
    cat "$BENCH_TMP/s_time-$i.log" >>"$BENCH_TMP/raw.log"
    n=$(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' "$BENCH_TMP/s_time-$i.log" | tail -n 1)
    [[ -n $n ]] || { warn "$name full round $r: s_time client $i reported nothing"; n=0; }
    total=$((total + n))
  done
  record full "$r" "$name" "$(awk -v n="$total" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", n / (e - s) }')" - - - -
}

log "warm-up: 1 s per target"
for line in "${TARGETS[@]}"; do
  read -r name tls_port plain_port _ <<<"$line"
  timeout 20 "${CLIENT[@]}" wrk -t1 -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$tls_port$PATH_OK" >/dev/null 2>&1 || warn "$name: warm-up failed"
  if ((PLAIN)); then
    timeout 20 "${CLIENT[@]}" wrk -t1 -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$plain_port$PATH_OK" >/dev/null 2>&1 || warn "$name: plain warm-up failed"
  fi
done

for m in "${MEASURE_LIST[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for line in "${TARGETS[@]}"; do
      read -r name port plain_port _ <<<"$line"
      url=https://127.0.0.1:$port
      case $m in
        h1) run_wrk h1 "$r" "$name" "$url" ;;
        h2) run_h2load "$r" "$name" "$url" ;;
        resumed) run_wrk resumed "$r" "$name" "$url" -H "Connection: close" ;;
        full) run_full "$r" "$name" "$port" ;;
        plain) run_wrk plain "$r" "$name" "http://127.0.0.1:$plain_port" ;;
        plain-new) run_wrk plain-new "$r" "$name" "http://127.0.0.1:$plain_port" -H "Connection: close" ;;
      esac
    done
  done
done

for line in "${TARGETS[@]}"; do
  read -r name tls_port _ <<<"$line"
  code=$(curl -s -k --max-time 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$tls_port$PATH_OK" || true)
  [[ $code == 200 ]] || warn "$name: after the load, GET $PATH_OK answered $code, expected 200"
done

# ----- the report -----
commit=$(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git -C "$ROOT_DIR" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes in src/ or Cargo.*)"
fi
META=$BENCH_TMP/meta.tsv
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf 'commit\t%s\n' "$commit"
  printf 'machine\t%s cores (nproc), kernel %s, %s\n' "$(nproc)" "$(uname -r)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  printf 'busy before\t%s%% of all cores in the second before the run\n' "$BUSY_PCT"
  printf 'loadavg at the end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'certificate\t%s, self-signed, the same PEM for both targets\n' "$CERT_DESC"
  printf 'settings\tSECS=%s ROUNDS=%s CONNS=%s STREAMS=%s FULL_CLIENTS=%s AUTHGATE_WORKERS=%s AUTHGATE_PIN=%s PIN_ARMS=%s\n' \
    "$SECS" "$ROUNDS" "$CONNS" "$STREAMS" "$FULL_CLIENTS" "${AUTHGATE_WORKERS:-default}" "${AUTHGATE_PIN:-default}" "$PIN_ARMS"
  if [[ -n "${CLIENT_CPUS:-}" ]]; then
    printf 'load generator CPUs\t%s (taskset: wrk, h2load, openssl and the nginx backend); the proxies unrestricted\n' "$CLIENT_CPUS"
  else
    printf 'load generator CPUs\tall (no taskset)\n'
  fi
  printf 'targets\t%s\n' "$(printf '%s; ' "${TARGETS[@]}")"
  printf 'haproxy\t%s\n' "$(haproxy -v 2>&1 | head -n 1)"
  printf 'openssl\t%s\n' "$(openssl version 2>&1 | head -n 1)"
  printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -n 1 || true)"
  printf 'h2load\t%s\n' "$(h2load --version 2>&1 | head -n 1 || echo missing)"
  for w in "${BENCH_WARNINGS[@]}"; do printf 'warning\t%s\n' "$w"; done
} >"$META"
mkdir -p "$BENCH_DIR/results"
stem=$BENCH_DIR/results/$(date -u +%Y-%m-%d)-tls
[[ $KEY == rsa ]] && stem=$stem-rsa
[[ $PIN_ARMS == 1 ]] && stem=$stem-pinning
[[ -n "${CLIENT_CPUS:-}" ]] && stem=$stem-client-cpu${CLIENT_CPUS//[^0-9]/_}
out=$stem.md
n=1
while [[ -e $out ]]; do out=$stem-$n.md; n=$((n + 1)); done
python3 - "$META" "$RESULTS" >"$out.tmp" <<'EOF'
import sys, csv, statistics
meta = [line.rstrip("\n").split("\t", 1) for line in open(sys.argv[1])]
rows = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
titles = {
    "h1": "HTTP/1.1 keep-alive over TLS (wrk), requests/s",
    "h2": "HTTP/2 over TLS (h2load, ALPN h2), requests/s",
    "resumed": "New connection per request, TLS session resumed (wrk, Connection: close), connections/s",
    "full": "Full TLS handshakes (parallel openssl s_time -new), handshakes/s",
    "plain": "HTTP/1.1 keep-alive, plain (wrk), requests/s",
    "plain-new": "New connection per request, plain (wrk, Connection: close), connections/s",
}
targets = list(dict.fromkeys(r["target"] for r in rows))
authgates = [t for t in targets if t != "haproxy"]
print("# TLS: authgate vs HAProxy terminating TLS\n")
print("| | |\n|---|---|")
for key, value in meta:
    if key != "warning":
        print(f"| {key} | {value} |")
warnings = [v for k, v in meta if k == "warning"]
print()
if warnings:
    print("**Warnings during the run:**\n")
    for w in warnings:
        print(f"- {w}")
    print()
print("Read the numbers as ratios: load generator, backend and proxy share 2 cores.\n")
print("Client CPU: the load generator's CPU time as % of one core (wrk and h2load are single-threaded:")
print("near 100 the client, not the target, sets the rate). Per-round ratios pair the runs of one round.\n")
head = "| measure | " + " | ".join(targets) + " | " + " | ".join(f"{t} / haproxy (per round)" for t in authgates)
head += " | p99 ms (" + ", ".join(targets) + ") | client CPU (" + ", ".join(targets) + ") | failed |"
print(head)
print("|---" * (len(targets) + len(authgates) + 4) + "|")
def runs(sel, target):
    return {r["round"]: r for r in sel if r["target"] == target}
for measure in ["plain", "plain-new", "h1", "h2", "resumed", "full"]:
    sel = [r for r in rows if r["measure"] == measure]
    if not sel:
        continue
    fmt = lambda vals: f"{statistics.mean(vals):,.0f} ({min(vals):,.0f}–{max(vals):,.0f})" if vals else "-"
    cells = [fmt([float(r["rate"]) for r in runs(sel, t).values()]) for t in targets]
    hap = runs(sel, "haproxy")
    for t in authgates:
        mine = runs(sel, t)
        rounds = [k for k in mine if k in hap and float(hap[k]["rate"]) > 0]
        if not rounds:
            cells.append("-")
            continue
        mean = statistics.mean(float(mine[k]["rate"]) for k in rounds) / statistics.mean(float(hap[k]["rate"]) for k in rounds)
        per = ", ".join(f"{float(mine[k]['rate']) / float(hap[k]['rate']):.2f}" for k in rounds)
        cells.append(f"**{mean:.2f}** ({per})")
    def p99(t):
        vals = [float(r["p99_us"]) for r in runs(sel, t).values() if r["p99_us"] not in ("-", "")]
        return f"{statistics.mean(vals) / 1000:.2f}" if vals else "-"
    def cpu(t):
        vals = [float(r["client_cpu"]) for r in runs(sel, t).values() if r["client_cpu"] not in ("-", "")]
        return f"{statistics.mean(vals):.0f}%" if vals else "-"
    failed = sum(int(r["failed"]) for r in sel if r["failed"] not in ("-", ""))
    cells.append(", ".join(p99(t) for t in targets))
    cells.append(", ".join(cpu(t) for t in targets))
    cells.append(str(failed))
    print(f"| {titles[measure]} | " + " | ".join(cells) + " |")
print("\nMean over the rounds (min–max in parentheses). Every run:\n")
print("| measure | round | target | rate/s | p50 us | p99 us | failed | client CPU |\n|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['measure']} | {r['round']} | {r['target']} | {float(r['rate']):,.0f} | {r['p50_us']} | {r['p99_us']} | {r['failed']} | {r['client_cpu']} |")
EOF
mv "$out.tmp" "$out"
echo
cat "$out"
echo
echo "report saved to ${out#"$ROOT_DIR"/}"
