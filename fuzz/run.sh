#!/usr/bin/env bash
# Runs the authgate fuzz targets one after another and prints a summary per target.
#
#   bash fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#
# Each target runs for SECONDS with libFuzzer, on fuzz/corpus/<target> (grown, git-ignored) plus
# the committed seeds in fuzz/seeds/<target>. Crashing inputs land in fuzz/artifacts/<target>/,
# full logs in fuzz/logs/<target>.log. Exit status: 0 when nothing crashed, 1 when a target
# crashed (or timed out / ran out of memory on an input), 2 on a usage or build error (the other
# targets still run).
#
# No nightly toolchain is needed: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags
# cargo-fuzz passes (sanitizer, coverage instrumentation).
# Extra libFuzzer flags can be given in FUZZ_ARGS, e.g. FUZZ_ARGS="-jobs=1 -dict=my.dict".

set -uo pipefail

ALL_TARGETS=(target_validator authorization_parser jwt_parsing config_loader upstream_response
             form_fields multipart_scan json_fields cors_origin)

usage() {
    echo "usage: bash fuzz/run.sh SECONDS [TARGET...]" >&2
    echo "targets: ${ALL_TARGETS[*]}" >&2
    exit 2
}

[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for target in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $target "* ]] || {
        echo "unknown target: $target" >&2
        usage
    }
done

# cargo-fuzz expects to be run from the crate that contains fuzz/.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

mkdir -p fuzz/logs
summary=()
crashed=0
failed=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    log="fuzz/logs/$target.log"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    # Built just before its run (so the time below is fuzzing time); `cargo fuzz run` then finds
    # the target up to date unless the sources changed in between.
    echo "== $target: building"
    if ! cargo fuzz build "$target" >"$log" 2>&1; then
        tail -20 "$log"
        line=$(printf '%-21s ERROR: the build failed, see %s' "$target" "$log")
        echo "$line"
        summary+=("$line")
        failed=1
        continue
    fi
    echo "== $target: ${seconds}s (log: $log)"
    started=$(date +%s)
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >>"$log" 2>&1
    status=$?
    elapsed=$(($(date +%s) - started))

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    # The last status line: "#123456 DONE cov: 1234 ft: 5678 corp: 90/12Kb ..." (or pulse/NEW).
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
    files=$(find "$corpus" -type f | wc -l)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    reason=$(grep -m1 -E "^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer|panicked at" "$log")

    if [[ -n $artifact ]]; then
        crashed=1
        outcome="CRASH: $artifact ${reason:+($reason)}"
    elif [[ $status -ne 0 ]] && ! grep -q 'INITED' "$log"; then
        # libFuzzer never started: a build or cargo error (e.g. the main crate mid-edit).
        failed=1
        outcome="ERROR: exit $status before fuzzing started, see $log"
    elif [[ $status -ne 0 ]]; then
        crashed=1
        outcome="CRASH: exit $status, see $log ${reason:+($reason)}"
    else
        outcome="no crash"
    fi
    line=$(printf '%-21s execs=%-11s exec/s=%-7s time=%ss cov=%-6s ft=%-6s corpus=%s (%s files) rss=%sMb  %s' \
        "$target" "${execs:-?}" "${rate:-?}" "$elapsed" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
        "$files" "${peak:-?}" "$outcome")
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ $crashed -ne 0 ]]; then
    exit 1
fi
if [[ $failed -ne 0 ]]; then
    exit 2
fi
