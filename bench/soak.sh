#!/usr/bin/env bash
# Soak with faults: a release server on 127.0.0.1 under about half its peak load of good
# Classify calls for SOAK_SECONDS, while the model is swapped every 5 s for a good file and
# a corrupt one in turn, invalid requests are mixed in, and its resident memory is sampled;
# then SIGTERM during calls in flight. The load is driven by examples/soak.rs.
#
# Usage: bench/soak.sh
# Env:   SOAK_SECONDS  seconds of load (default 300, 10 to 480); 10 makes a smoke test
#        SOAK_RATE     good calls per second to hold (default: measure the peak, hold half)
#        SOAK_RSS_TOLERANCE_MIB  allowed RSS growth from start (after warm-up) to end (default 16)
#        SOAK_KEEP     keep the temporary folder (server log, model files) when set to 1
#
# Exits 0 only when no good call failed, every good reload succeeded, every corrupt one
# was refused with FAILED_PRECONDITION while the old model kept answering, every invalid
# request got its code, RSS stayed within the tolerance, the calls in flight at SIGTERM
# were answered in full and the server exited with 0. Starts one server, ends only it, by
# its PID, and removes its temporary folder.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOAK_SECONDS="${SOAK_SECONDS:-300}"
SOAK_RATE="${SOAK_RATE:-0}"
SOAK_RSS_TOLERANCE_MIB="${SOAK_RSS_TOLERANCE_MIB:-16}"
if ! [[ "$SOAK_SECONDS" =~ ^[0-9]+$ ]] || [ "$SOAK_SECONDS" -lt 10 ] || [ "$SOAK_SECONDS" -gt 480 ]; then
    echo "SOAK_SECONDS must be 10 to 480 (the whole run stays under 10 minutes)" >&2
    exit 2
fi

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin topics --example soak
# Wherever cargo puts its output: CARGO_TARGET_DIR, a config file, or target/.
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target_dir/release/topics"
driver="$target_dir/release/examples/soak"

tmp="$(mktemp -d)"
server_pid=""
driver_pid=""
cleanup() {
    local status=$?
    if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        echo "stopping the server (pid $server_pid)" >&2
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$repo/models/topics.model" "$tmp/topics.model"
started=$(date +%s)
# Made here, not by the background job's redirection, which may come after the first read.
: > "$tmp/server.log"
"$bin" serve --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --model "$tmp/topics.model" \
    </dev/null >/dev/null 2>"$tmp/server.log" &
server_pid=$!

addr=""; metrics_addr=""
for _ in $(seq 1 300); do
    addr="$(sed -n 's/.*serving topics.v1.TopicClassifier.* addr=\([0-9.:]*\).*/\1/p; s/.* addr=\([0-9.:]*\) .*serving topics.v1.TopicClassifier.*/\1/p' "$tmp/server.log" | head -n1)"
    metrics_addr="$(sed -n 's/.*metrics_addr=\([0-9.:]*\).*/\1/p' "$tmp/server.log" | head -n1)"
    [ -n "$addr" ] && [ -n "$metrics_addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "the server exited at start-up" >&2; exit 1; }
    sleep 0.1
done
if [ -z "$addr" ] || [ -z "$metrics_addr" ]; then
    cat "$tmp/server.log" >&2; echo "the server did not report its addresses" >&2; exit 1
fi
echo "server pid $server_pid on $addr, metrics on $metrics_addr, model copied to a temporary folder"

# The driver ends with SIGTERM to the server; it is bounded by its own clock, and by this.
# In the background, so that a signal to this script is handled at once, not after the driver.
driver_status=0
timeout --signal=TERM $((SOAK_SECONDS + 90)) "$driver" \
    --addr "$addr" --metrics-addr "$metrics_addr" --pid "$server_pid" --model-dir "$tmp" \
    --seed "$repo/models/corpus/seed.jsonl" --seconds "$SOAK_SECONDS" --rate "$SOAK_RATE" \
    --rss-tolerance-mib "$SOAK_RSS_TOLERANCE_MIB" &
driver_pid=$!
wait "$driver_pid" || driver_status=$?
driver_pid=""

# Shutdown grace is 20 s by default; a server still up after 40 s has not drained.
for _ in $(seq 1 400); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
server_status=0
if kill -0 "$server_pid" 2>/dev/null; then
    echo "the server is still running 40 s after the driver ended" >&2
    server_status=255
else
    wait "$server_pid" || server_status=$?
    server_pid=""
fi
panics=$(grep -c 'panicked' "$tmp/server.log" || true)
stopped=$(grep -c -E "stopped$" "$tmp/server.log" || true)
echo "server exit code: $server_status; logged 'stopped': $([ "$stopped" -gt 0 ] && echo yes || echo no); panics in its log: $panics"
echo "wall time: $(( $(date +%s) - started )) s"

if [ "$driver_status" -eq 0 ] && [ "$server_status" -eq 0 ] && [ "$panics" -eq 0 ] && [ "$stopped" -gt 0 ]; then
    echo "SOAK PASSED"
else
    echo "SOAK FAILED (driver status $driver_status, server exit code $server_status)"
    exit 1
fi
