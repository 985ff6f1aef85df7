#!/usr/bin/env bash
# Streaming through authgate: a STREAM_MIB (default 1024) MiB download and upload, checked with
# SHA-256 end to end, while authgate's RSS is sampled every 100 ms. The claim to check: RSS grows by
# less than 16 MiB, whatever the body size (bodies are streamed, never buffered).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

STREAM_MIB=${STREAM_MIB:-1024}
bytes=$((STREAM_MIB * 1024 * 1024))
bench_init
build_authgate
port_free_or_die 18087 18088
spawn stream-backend python3 "$BENCH_DIR/stream_backend.py" 18088
wait_port 18088 "$SPAWNED_PID" stream-backend
sed -e 's/127.0.0.1:18083/127.0.0.1:18087/' -e 's/127.0.0.1:18080/127.0.0.1:18088/' \
  -e '0,/^\[\[route\]\]/s//[limits]\nmax_body_bytes = 4294967296\n\n[[route]]/' \
  "$BENCH_DIR/gateway.bench.toml" >"$BENCH_TMP/gateway.toml"
spawn authgate env BETTER_AUTH_SECRET="$BENCH_SECRET" "$AUTHGATE_BIN" --config "$BENCH_TMP/gateway.toml"
GATEWAY_PID=$SPAWNED_PID
wait_port 18087 "$GATEWAY_PID" authgate
TOKEN=$(mint_token alice)
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$GATEWAY_PID/status"; }
( while kill -0 "$GATEWAY_PID" 2>/dev/null; do rss >>"$BENCH_TMP/rss.log" || true; sleep 0.1; done ) &
BENCH_PIDS+=("$!")
RSS_BEFORE=$(rss)

expected=$(python3 - "$bytes" <<'PY'
import hashlib, sys
block = bytes((i * 31) % 251 for i in range(1 << 20))
total, h = int(sys.argv[1]), hashlib.sha256()
while total:
    piece = block[: min(len(block), total)]
    h.update(piece)
    total -= len(piece)
print(h.hexdigest())
PY
)
log "download: $STREAM_MIB MiB"
started=$(date +%s.%N)
got=$(curl -sS --fail -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18087/api/alice/tasks/download?bytes=$bytes" | sha256sum | cut -d' ' -f1)
down_secs=$(python3 -c "import time; print(round(time.time() - $started, 2))")
[[ "$got" == "$expected" ]] || die "download checksum mismatch"
RSS_AFTER_DOWN=$(rss)

log "upload: $STREAM_MIB MiB (chunked)"
started=$(date +%s.%N)
answer=$(python3 - "$bytes" <<'PY' | curl -sS --fail -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" -T - http://127.0.0.1:18087/api/alice/tasks/upload
import sys
block = bytes((i * 31) % 251 for i in range(1 << 20))
total = int(sys.argv[1])
out = sys.stdout.buffer
while total:
    piece = block[: min(len(block), total)]
    out.write(piece)
    total -= len(piece)
PY
)
up_secs=$(python3 -c "import time; print(round(time.time() - $started, 2))")
[[ "$answer" == "$bytes $expected" ]] || die "upload checksum mismatch: $answer"
RSS_AFTER_UP=$(rss)
RSS_PEAK=$(sort -n "$BENCH_TMP/rss.log" | tail -1)
growth=$(((RSS_PEAK - RSS_BEFORE) / 1024))
cat <<REPORT

## authgate streaming, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT_DIR" && git rev-parse --short HEAD 2>/dev/null || echo '?')

| measure | value |
|---|---|
| download | $STREAM_MIB MiB in ${down_secs}s, SHA-256 matches |
| upload (chunked) | $STREAM_MIB MiB in ${up_secs}s, SHA-256 matches at the backend |
| authgate RSS before / after download / after upload | ${RSS_BEFORE} / ${RSS_AFTER_DOWN} / ${RSS_AFTER_UP} KiB |
| authgate RSS peak (100 ms samples) | ${RSS_PEAK} KiB: growth ${growth} MiB (must be < 16) |
REPORT
((growth < 16)) || die "RSS grew by ${growth} MiB"
