#!/usr/bin/env bash
# Builds the fuzz targets and runs each one, one after another, for a bounded time,
# starting from the committed seeds; prints how many inputs each target ran and exits
# non-zero if any target found a crash (a panic, an abort, a leak, a timeout or an
# allocation past the limits below).
#
#   fuzz/run.sh                  every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=300 fuzz/run.sh model_file
#
# Needs a nightly toolchain (FUZZ_TOOLCHAIN, default "nightly") and cargo-fuzz, which
# is installed with `cargo install --locked cargo-fuzz` when missing. The working corpus
# grows in corpus/<target>, crashing inputs land in artifacts/<target>, and each run's
# full libFuzzer output in logs/<target>.log; none of them is committed.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(text classify model_file); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

# One build for all targets: they share the library, the bulk of the work.
cargo +"$toolchain" fuzz build

mkdir -p logs
failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    # Seeds join the working corpus without overwriting what fuzzing has found.
    cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    log="logs/$target.log"
    status=0
    # A single allocation over 512 MB is a bug for inputs of at most a few kilobytes;
    # an input taking 20 s is a hang.
    cargo +"$toolchain" fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$runs" ]; then
        # Crashed runs print no final stats; the last status line has the count so far.
        runs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    fi
    corpus_size=$(find "corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        echo "$target: ${runs:-?} executions in ${seconds} s, corpus ${corpus_size} inputs"
    else
        echo "$target: CRASH (exit $status) after ${runs:-?} executions; see fuzz/$log and fuzz/artifacts/$target" >&2
        grep -E '^(thread .* panicked|==[0-9]+==ERROR|SUMMARY|Test unit written)' "$log" | head -n 10 >&2 || true
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
