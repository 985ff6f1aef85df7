#!/usr/bin/env bash
# authgate's resident memory with N idle keep-alive connections.
# Starts the nginx backend (:18080) and authgate (:18083), opens N connections, sends one
# GET /api/alice/tasks on each (read fully, 200 expected), keeps them all open and idle, and reports
# authgate's VmRSS before, while holding them, and 0.5 s and 5 s after closing them (src/runtime/memory.rs
# gives freed memory back within about 2 s).
# env: N (10000)  CONCURRENCY (256 connects in flight)  HOLD (2 s idle before measuring)
#      REQUEST (1: one request per connection first; 0: connect only)
#      TLS (0; 1: TLS on authgate's listener, a self-signed P-256 certificate, the client does a
#      full handshake per connection; results go to <date>-rss-idle-tls.md)
#      AUTHGATE_BIN (default: cargo build --release)  AUTHGATE_WORKERS  KEEP_TMP=1
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

N=${N:-10000}
CONCURRENCY=${CONCURRENCY:-256}
HOLD=${HOLD:-2}
REQUEST=${REQUEST:-1}
[[ $REQUEST == 0 || $REQUEST == 1 ]] || die "REQUEST must be 0 or 1"
TLS=${TLS:-0}
[[ $TLS == 0 || $TLS == 1 ]] || die "TLS must be 0 or 1"
for v in N CONCURRENCY HOLD; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done

need_tools nginx curl
build_authgate
port_free_or_die 18080 18083
bench_init
# The client holds N sockets and so does authgate (each process gets this limit).
raise_nofile $((N + 4096))
(($(ulimit -n) >= N + 64)) || die "open-file limit $(ulimit -n) is too low for N=$N"

start_backend
authgate_config
if [[ $TLS == 1 ]]; then
  need_tools openssl
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost" -keyout "$BENCH_TMP/key.pem" -out "$BENCH_TMP/cert.pem" \
    >"$BENCH_TMP/openssl-req.log" 2>&1 || { cat "$BENCH_TMP/openssl-req.log" >&2; die "openssl could not make a certificate"; }
  printf '\n[server.tls]\ncert = "%s"\nkey = "%s"\n' "$BENCH_TMP/cert.pem" "$BENCH_TMP/key.pem" >>"$AUTHGATE_CONFIG"
  # 10,000 handshakes take longer than the 10 s an idle keep-alive connection is kept by default.
  printf '\n[limits]\nheader_read_timeout = "60s"\n' >>"$AUTHGATE_CONFIG"
fi
start_authgate authgate
TOKEN=$(mint_token alice) || die "could not mint a token"
if [[ $TLS == 0 ]]; then
  code=$(http_status "http://127.0.0.1:18083/api/alice/tasks" "$TOKEN")
  [[ $code == 200 ]] || warn "authgate answered $code to GET /api/alice/tasks, expected 200"
fi
sleep 0.5

# Bounded: connects and requests time out, and the whole client is capped.
OUT=$ROOT_DIR/bench/results/$(date -u +%F)-rss-idle$([[ $TLS == 1 ]] && echo -tls || true).md
{
  echo "# authgate resident memory with idle keep-alive connections, $(date -u '+%F %T UTC')"
  echo
  echo "commit $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown), N=$N, REQUEST=$REQUEST, TLS=$TLS, HOLD=${HOLD}s, $(nproc) cores"
  echo
} >"$OUT"
timeout --foreground --signal=INT $((120 + N / 50 + HOLD)) python3 - "$AUTHGATE_PID" "$N" "$CONCURRENCY" "$HOLD" "$TOKEN" 18083 "$REQUEST" "$TLS" <<'PY' | tee -a "$OUT"
import asyncio, os, ssl, sys

pid, n, conc, hold, token, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
send_request = sys.argv[7] == "1"
tls = None
if sys.argv[8] == "1":
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
REQ = (f"GET /api/alice/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
       f"Authorization: Bearer {token}\r\n\r\n").encode()


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))


async def read_response(r):
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v.strip())
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            await r.readexactly(size + 2)
            if size == 0:
                break
    else:
        await r.readexactly(length)
    return status


async def open_one(sem, held, stats):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None), 10)
        except Exception as e:
            stats["connect_errors"] += 1
            stats["last_error"] = repr(e)
            return
        if not send_request:
            held.append((r, w))
            return
        try:
            w.write(REQ)
            await w.drain()
            status = await asyncio.wait_for(read_response(r), 10)
            stats[status] = stats.get(status, 0) + 1
        except Exception as e:
            stats["request_errors"] += 1
            stats["last_error"] = repr(e)
        held.append((r, w))


async def main():
    before, fds_before = rss_kib(), fds()
    sem = asyncio.Semaphore(conc)
    held, stats = [], {"connect_errors": 0, "request_errors": 0}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(open_one(sem, held, stats) for _ in range(n)))
    opened_s = loop.time() - t0
    await asyncio.sleep(hold)
    during, fds_during = rss_kib(), fds()
    closed_by_server = sum(1 for r, _ in held if r.at_eof())
    for _, w in held:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in held), return_exceptions=True)
    await asyncio.sleep(0.5)
    after, fds_after = rss_kib(), fds()
    # src/runtime/memory.rs looks every 2 s and gives back what a burst freed.
    await asyncio.sleep(4.5)
    settled = rss_kib()

    statuses = ", ".join(f"{k}: {v}" for k, v in stats.items() if isinstance(k, int))
    print(f"connections: {n} requested, {len(held)} opened in {opened_s:.1f}s; responses {{{statuses}}}; "
          f"connect errors {stats['connect_errors']}, request errors {stats['request_errors']}"
          + (f" (last: {stats['last_error']})" if "last_error" in stats else ""))
    print(f"idle for {hold:.0f}s: {closed_by_server} of them closed by authgate meanwhile")
    print()
    print("| authgate | VmRSS KiB | open fds |")
    print("|---|---:|---:|")
    print(f"| before (after 1 request) | {before:,} | {fds_before} |")
    print(f"| holding {len(held)} idle keep-alive connections | {during:,} | {fds_during} |")
    print(f"| 0.5 s after closing them | {after:,} | {fds_after} |")
    print(f"| 5 s after closing them | {settled:,} | |")
    print()
    held_n = max(len(held) - closed_by_server, 1)
    print(f"total while holding them: {during / 1024:.1f} MiB (issue 10 target: at most 64 MiB with 10,000)")
    print(f"growth: {during - before:,} KiB for {held_n} connections = "
          f"{(during - before) / held_n:.2f} KiB per idle connection; "
          f"{after - before:+,} KiB left 0.5 s after closing, {settled - before:+,} KiB 5 s after")
    bad = stats["connect_errors"] + stats["request_errors"] + sum(v for k, v in stats.items() if isinstance(k, int) and k != 200)
    if bad:
        print(f"WARNING: {bad} connections failed or got a non-200 answer")

asyncio.run(main())
PY
log "saved to $OUT"
