#!/usr/bin/env bash
# authgate's start-up time: from launching the process to the first accepted TCP connection on
# 127.0.0.1:18083, measured by a Python poll-connect loop (a fresh connect attempt every ~100 µs),
# over RUNS runs; reports min/median/max in ms. The time includes Python's fork+exec (well under 1 ms).
# No backend is started: authgate does not need its upstream to start listening.
# env: RUNS (10)  AUTHGATE_BIN (default: cargo build --release)  AUTHGATE_WORKERS  KEEP_TMP=1
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

RUNS=${RUNS:-10}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
build_authgate
port_free_or_die 18083
bench_init
authgate_config

timeout --foreground --signal=INT $((RUNS * 15 + 10)) env BETTER_AUTH_SECRET="$BENCH_SECRET" \
  python3 - "$AUTHGATE_BIN" "$AUTHGATE_CONFIG" "$RUNS" 18083 "$BENCH_TMP" <<'PY'
import errno, os, signal, socket, statistics, subprocess, sys, time

binary, config, runs, port, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
addr = ("127.0.0.1", port)


def accepting():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        return s.connect_ex(addr) == 0
    finally:
        s.close()


times = []
for i in range(runs):
    if accepting():
        sys.exit(f"error: 127.0.0.1:{port} already accepts connections before run {i + 1}")
    with open(os.path.join(tmp, f"startup-{i + 1}.log"), "wb") as log:
        t0 = time.perf_counter_ns()
        p = subprocess.Popen([binary, "--config", config], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = t0 + 10_000_000_000
            while True:
                if accepting():
                    t1 = time.perf_counter_ns()
                    break
                if p.poll() is not None:
                    sys.exit(f"error: authgate exited with {p.returncode} before listening (see {log.name})")
                if time.perf_counter_ns() > deadline:
                    sys.exit("error: authgate did not listen within 10 s")
                time.sleep(0.0001)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    ms = (t1 - t0) / 1e6
    times.append(ms)
    print(f"run {i + 1:2d}: {ms:7.2f} ms")

print(f"\nauthgate start-up to first accepted connection over {runs} runs: "
      f"min {min(times):.2f} ms, median {statistics.median(times):.2f} ms, max {max(times):.2f} ms")
PY
