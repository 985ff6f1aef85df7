#!/usr/bin/env bash
# TLS side by side: authgate terminating TLS itself next to HAProxy terminating TLS with the same
# certificate, both doing the same JWT work in front of the same nginx backend (:18080).
#   authgate-tls  https://127.0.0.1:18443  bench/gateway.bench.toml + [server.tls]
#   haproxy-tls   https://127.0.0.1:18444  bench/haproxy.cfg with `bind ... ssl crt <pem> alpn h2,http/1.1`
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
# Writes bench/results/<date>-tls.md (<date>-tls-rsa.md with KEY=rsa) and prints it. Bounded: a watchdog stops everything after
# MAX_SECS (default: twice the expected time plus a minute).
#
# env: SECS (5)  ROUNDS (2)  CONNS (32)  STREAMS (10)  FULL_CLIENTS (2)  KEY (ec|rsa, ec)
#      MEASURES ("h1 h2 resumed full")  AUTHGATE_BIN  AUTHGATE_WORKERS  AUTHGATE_PIN  KEEP_TMP=1
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
  [[ " h1 h2 resumed full " == *" $m "* ]] || die "MEASURES: unknown measure '$m'"
done
TARGETS=(
  "authgate-tls https://127.0.0.1:18443 18443"
  "haproxy-tls  https://127.0.0.1:18444 18444"
)
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
port_free_or_die 18080 18443 18444
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
AUTHGATE_TLS_CONFIG=$BENCH_TMP/gateway-tls.toml
{
  sed 's/127.0.0.1:18083/127.0.0.1:18443/' "$BENCH_DIR/gateway.bench.toml" |
    if [[ -n "${AUTHGATE_WORKERS:-}" ]]; then sed "/^\[server\]/a workers = $AUTHGATE_WORKERS"; else cat; fi |
    if [[ -n "${AUTHGATE_PIN:-}" ]]; then sed "/^\[server\]/a pin_workers = $AUTHGATE_PIN"; else cat; fi
  printf '\n[server.tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
  # The `full` runs send no token from one address: authgate's brute-force guard would answer 429
  # for a minute afterwards (HAProxy has no such guard). It is not what is measured here.
  printf '\n[rate_limit]\nauth_failures = "off"\n'
} >"$AUTHGATE_TLS_CONFIG"
[[ -z "${AUTHGATE_WORKERS:-}" ]] || grep -q "^workers = $AUTHGATE_WORKERS\$" "$AUTHGATE_TLS_CONFIG" ||
  die "could not set workers in $AUTHGATE_TLS_CONFIG"
[[ -z "${AUTHGATE_PIN:-}" ]] || grep -q "^pin_workers = $AUTHGATE_PIN\$" "$AUTHGATE_TLS_CONFIG" ||
  die "could not set pin_workers in $AUTHGATE_TLS_CONFIG"
BETTER_AUTH_SECRET=$BENCH_SECRET "$AUTHGATE_BIN" check --config "$AUTHGATE_TLS_CONFIG" >"$BENCH_TMP/check-tls.log" 2>&1 ||
  { cat "$BENCH_TMP/check-tls.log" >&2; die "authgate check rejected $AUTHGATE_TLS_CONFIG"; }
HAPROXY_TLS_CONFIG=$BENCH_TMP/haproxy-tls.cfg
sed "s|^  bind 127.0.0.1:18081\$|  bind 127.0.0.1:18444 ssl crt $TLS_DIR/haproxy.pem alpn h2,http/1.1|" \
  "$BENCH_DIR/haproxy.cfg" >"$HAPROXY_TLS_CONFIG"
grep -q '18444 ssl crt' "$HAPROXY_TLS_CONFIG" || die "could not put the TLS bind line into the HAProxy config"

log "starting the backend, authgate-tls and haproxy-tls"
start_backend
spawn authgate-tls env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$AUTHGATE_TLS_CONFIG"
wait_port 18443 "$SPAWNED_PID" authgate-tls
JWT_SECRET=$BENCH_SECRET haproxy -c -f "$HAPROXY_TLS_CONFIG" >"$BENCH_TMP/haproxy-check.log" 2>&1 ||
  { cat "$BENCH_TMP/haproxy-check.log" >&2; die "haproxy rejected the TLS config"; }
spawn haproxy-tls env JWT_SECRET="$BENCH_SECRET" haproxy -db -f "$HAPROXY_TLS_CONFIG"
wait_port 18444 "$SPAWNED_PID" haproxy-tls

# ----- sanity checks over TLS: the answers must be right before anything is timed -----
for line in "${TARGETS[@]}"; do
  read -r name url _ <<<"$line"
  curl_tls=(-s --max-time 5 --cacert "$TLS_DIR/cert.pem" --resolve "localhost:${url##*:}:127.0.0.1")
  host_url="https://localhost:${url##*:}"
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
  out=$(timeout --foreground --signal=INT $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$CLIENT_TIME" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency --timeout 5s \
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
  out=$(timeout --foreground $((SECS + 20)) /usr/bin/time -f '%U %S' -o "$CLIENT_TIME" h2load -t1 -c"$CONNS" -m"$STREAMS" -D"$SECS" \
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
    timeout $((SECS + 20)) openssl s_time -connect "127.0.0.1:$port" -new -time "$SECS" -www "$PATH_OK" \
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
  read -r name url _ <<<"$line"
  timeout 20 wrk -t1 -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "$url$PATH_OK" >/dev/null 2>&1 || warn "$name: warm-up failed"
done

for m in "${MEASURE_LIST[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for line in "${TARGETS[@]}"; do
      read -r name url port <<<"$line"
      case $m in
        h1) run_wrk h1 "$r" "$name" "$url" ;;
        h2) run_h2load "$r" "$name" "$url" ;;
        resumed) run_wrk resumed "$r" "$name" "$url" -H "Connection: close" ;;
        full) run_full "$r" "$name" "$port" ;;
      esac
    done
  done
done

for line in "${TARGETS[@]}"; do
  read -r name url _ <<<"$line"
  code=$(curl -s -k --max-time 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url$PATH_OK" || true)
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
  printf 'settings\tSECS=%s ROUNDS=%s CONNS=%s STREAMS=%s FULL_CLIENTS=%s AUTHGATE_WORKERS=%s AUTHGATE_PIN=%s\n' \
    "$SECS" "$ROUNDS" "$CONNS" "$STREAMS" "$FULL_CLIENTS" "${AUTHGATE_WORKERS:-default}" "${AUTHGATE_PIN:-default}"
  printf 'haproxy\t%s\n' "$(haproxy -v 2>&1 | head -n 1)"
  printf 'openssl\t%s\n' "$(openssl version 2>&1 | head -n 1)"
  printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -n 1 || true)"
  printf 'h2load\t%s\n' "$(h2load --version 2>&1 | head -n 1 || echo missing)"
  for w in "${BENCH_WARNINGS[@]}"; do printf 'warning\t%s\n' "$w"; done
} >"$META"
mkdir -p "$BENCH_DIR/results"
stem=$BENCH_DIR/results/$(date -u +%Y-%m-%d)-tls
[[ $KEY == rsa ]] && stem=$stem-rsa
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
}
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
print("near 100 the client, not the target, sets the rate).\n")
print("| measure | authgate-tls | haproxy-tls | authgate / haproxy | authgate p99 | haproxy p99 | client CPU (authgate / haproxy runs) | failed |")
print("|---|---|---|---|---|---|---|---|")
for measure in ["h1", "h2", "resumed", "full"]:
    sel = [r for r in rows if r["measure"] == measure]
    if not sel:
        continue
    def stats(target):
        vals = [float(r["rate"]) for r in sel if r["target"] == target]
        p99 = [float(r["p99_us"]) for r in sel if r["target"] == target and r["p99_us"] not in ("-", "")]
        return vals, p99
    a, ap99 = stats("authgate-tls")
    h, hp99 = stats("haproxy-tls")
    fmt = lambda vals: f"{statistics.mean(vals):,.0f} ({min(vals):,.0f}–{max(vals):,.0f})" if vals else "-"
    ratio = f"{statistics.mean(a) / statistics.mean(h):.2f}" if a and h and statistics.mean(h) else "-"
    p = lambda vals: f"{statistics.mean(vals) / 1000:.2f} ms" if vals else "-"
    failed = sum(int(r["failed"]) for r in sel if r["failed"] not in ("-", ""))
    def cpu(target):
        vals = [float(r["client_cpu"]) for r in sel if r["target"] == target and r["client_cpu"] not in ("-", "")]
        return f"{statistics.mean(vals):.0f}%" if vals else "-"
    print(f"| {titles[measure]} | {fmt(a)} | {fmt(h)} | {ratio} | {p(ap99)} | {p(hp99)} | {cpu('authgate-tls')} / {cpu('haproxy-tls')} | {failed} |")
print("\nMean over the rounds (min–max in parentheses). Every run:\n")
print("| measure | round | target | rate/s | p50 | p99 | failed | client CPU |\n|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['measure']} | {r['round']} | {r['target']} | {float(r['rate']):,.0f} | {r['p50_us']} | {r['p99_us']} | {r['failed']} | {r['client_cpu']} |")
EOF
mv "$out.tmp" "$out"
echo
cat "$out"
echo
echo "report saved to ${out#"$ROOT_DIR"/}"
