#!/usr/bin/env bash
# Runs the example clients, Python (examples/python/classify.py) and Rust
# (examples/classify.rs), against a live `topics serve` on 127.0.0.1, as a user would:
# the seed article must come back as "security", and an empty text as INVALID_ARGUMENT.
#
# Usage: examples/run-against-server.sh
# Env:   PROFILE  cargo profile of the server and the Rust example: release (default), or
#                 dev to reuse what `cargo test` has just built (CI does, to save a release build)
#
# Needs cargo and python3 (with venv); pip installs the pinned requirements into a
# temporary venv. Every step has a time limit; the server is started on a free port and
# stopped by its PID; the temporary directory is removed on exit.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile="${PROFILE:-release}"
work="$(mktemp -d)"
server_pid=""

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

echo "== building the server and the Rust example ($profile)"
# The JSON messages name the built executables, wherever the target directory is.
timeout 1800 cargo build --locked --quiet --profile "$profile" --manifest-path "$repo/Cargo.toml" \
    --bin topics --example classify --message-format json-render-diagnostics >"$work/build.jsonl"
read -r server_bin rust_example < <(python3 - "$work/build.jsonl" <<'EOF'
import json, sys
found = {}
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        target = message["target"]
        found[(target["name"], target["kind"][0])] = message["executable"]
print(found[("topics", "bin")], found[("classify", "example")])
EOF
)

echo "== starting the server on a free port"
TOPICS_LOG=info "$server_bin" serve --addr 127.0.0.1:0 --model "$repo/models/topics.model" \
    --log-format text </dev/null >/dev/null 2>"$work/server.log" &
server_pid=$!
addr=""
for _ in $(seq 300); do
    addr="$(grep -m1 'serving topics.v1' "$work/server.log" | grep -o ' addr=[^ ]*' | cut -d= -f2 || true)"
    [ -n "$addr" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "the server did not start; its log:"
    cat "$work/server.log"
    exit 1
fi
echo "server $server_pid at $addr"

# The seed article as the tests read it: its paragraphs, one per line.
python3 - "$repo/models/corpus/seed.jsonl" "$work/seed.txt" <<'EOF'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    paragraphs = [json.loads(line)["text"] for line in f if line.strip()]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("\n".join(paragraphs))
EOF

echo "== installing the Python client's requirements into a temporary venv"
timeout 120 python3 -m venv "$work/venv"
timeout 600 "$work/venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$repo/examples/python/requirements.txt"

# The label line of a client's output.
label_of() { awk '$1 == "label:" { print $2 }' "$1"; }

check_client() {
    local name="$1"
    shift
    echo "== $name: the seed article"
    if timeout 60 "$@" --addr "$addr" --file "$work/seed.txt" >"$work/out" 2>"$work/err"; then
        cat "$work/out"
        local label
        label="$(label_of "$work/out")"
        if [ "$label" = security ]; then pass "$name labels the seed article security"; else fail "$name gave label '$label', expected security"; fi
    else
        cat "$work/out" "$work/err"
        fail "$name could not classify the seed article"
    fi

    echo "== $name: an empty text"
    local status=0
    timeout 60 "$@" --addr "$addr" --text " " >"$work/out" 2>"$work/err" || status=$?
    cat "$work/err"
    if [ "$status" = 1 ] && grep -qiE 'INVALID_?ARGUMENT' "$work/err"; then
        pass "$name reports INVALID_ARGUMENT and exits 1"
    else
        fail "$name exited $status on an empty text, expected 1 with INVALID_ARGUMENT"
    fi
}

check_client python "$work/venv/bin/python" "$repo/examples/python/classify.py"
check_client rust "$rust_example"

echo "== stopping the server"
kill -TERM "$server_pid"
for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
    fail "the server still runs 30 s after SIGTERM; its log:"
    cat "$work/server.log"
else
    status=0
    wait "$server_pid" || status=$?
    server_pid=""
    if [ "$status" = 0 ] && grep -q 'stopped' "$work/server.log"; then
        pass "the server stops cleanly on SIGTERM"
    else
        fail "the server exited $status on SIGTERM; its log:"
        cat "$work/server.log"
    fi
fi

echo "examples: $passed passed, $failed failed"
[ "$failed" = 0 ]
