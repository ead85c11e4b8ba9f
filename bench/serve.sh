#!/usr/bin/env bash
# Server benchmark: our server and the Python anchor server side by side, in one run,
# driven by h2load on 127.0.0.1 only, bounded in count and time.
#
# Usage: bench/serve.sh [OUTDIR]
# Env:   ANCHORS  the anchors folder (default: ../shared/anchors beside the checkout)
#        PY       python of the anchor venv (default: made by $ANCHORS/setup.sh in OUTDIR/venv)
#        N_REQ    requests per run (default 20000 for us, ANCHOR_N_REQ=5000 for the anchor)
#        CONCS    concurrencies (default "1 16 64")
#
# Prints, for 600 bytes of the seed article at each concurrency, req/s, p50 and p99 of
# both servers and the ratio; ClassifyBatch of 256 such documents in documents/s; the
# server's peak resident memory idle and under load; and the time from process start to
# health SERVING. Installs h2load (Debian's nghttp2-client) when missing. Ends only the
# processes it started, by their PIDs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
ANCHORS="${ANCHORS:-$repo/../shared/anchors}"
N_REQ="${N_REQ:-20000}"; ANCHOR_N_REQ="${ANCHOR_N_REQ:-5000}"; CONCS="${CONCS:-1 16 64}"
port=$((20000 + RANDOM % 20000)); anchor_port=$((port + 1))

if ! command -v h2load >/dev/null; then
    echo "installing h2load (nghttp2-client) ..." >&2
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
if [ -z "${PY:-}" ]; then
    [ -x "$out/venv/bin/python" ] || bash "$ANCHORS/setup.sh" "$out/venv" >&2
    PY="$out/venv/bin/python"
fi

cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
bin="$target_dir/release/topics"
seed="$repo/models/corpus/seed.jsonl"

# Request bodies: field 1 of both services' requests is the text.
"$PY" - "$seed" "$out" <<'EOF'
import json, struct, sys
seed, out = sys.argv[1], sys.argv[2]
text = "\n".join(json.loads(l)["text"] for l in open(seed, encoding="utf-8"))
def prefix(t, n):
    b = t.encode()[:n]
    return b.decode("utf-8", "ignore").encode()
def varint(n):
    o = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        o.append(b | (0x80 if n else 0))
        if not n:
            return bytes(o)
def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload
def frame(message):
    return b"\0" + struct.pack(">I", len(message)) + message
doc = field(1, prefix(text, 600))
open(f"{out}/body_600.bin", "wb").write(frame(doc))
open(f"{out}/body_batch.bin", "wb").write(frame(b"".join(field(1, doc) for _ in range(256))))
EOF
cat "$repo"/models/corpus/*.jsonl > "$out/train.jsonl"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Start-up: process start to health SERVING, polled every millisecond.
"$PY" - "$bin" "$repo/models/topics.model" "$port" > "$out/startup.txt" <<'EOF'
import socket, subprocess, sys, time
import grpc
binary, model, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
best = []
for attempt in range(5):
    # A fresh port and subchannel each time: gRPC's reconnect backoff would otherwise
    # carry over from the previous attempt and hide the real start-up time.
    address = f"127.0.0.1:{port + 10 + attempt}"
    started = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--addr", address, "--model", model],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1),
                                                       ("grpc.initial_reconnect_backoff_ms", 1),
                                                       ("grpc.min_reconnect_backoff_ms", 1),
                                                       ("grpc.max_reconnect_backoff_ms", 2)])
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    while True:
        try:
            if check(b"", timeout=0.05) == b"\x08\x01":
                break
        except grpc.RpcError:
            time.sleep(0.001)
        if time.perf_counter() - started > 10:
            raise SystemExit("server not SERVING after 10 s")
    best.append((time.perf_counter() - started) * 1000)
    channel.close()
    proc.terminate()
    proc.wait(timeout=30)
print("startup_to_serving_ms " + " ".join(f"{b:.1f}" for b in best) + f" median={sorted(best)[2]:.1f}")
EOF
cat "$out/startup.txt"

"$bin" serve --addr "127.0.0.1:$port" --max-concurrent-requests 100000 > "$out/server.log" 2>&1 &
spid=$!; pids+=("$spid")
"$PY" "$ANCHORS/anchor_server.py" --train "$out/train.jsonl" --port "$anchor_port" > "$out/anchor.out" 2> "$out/anchor.err" &
apid=$!; pids+=("$apid")
for _ in $(seq 1 600); do
    grep -q 'serving topics' "$out/server.log" 2>/dev/null && grep -q '^READY' "$out/anchor.out" 2>/dev/null && break
    sleep 0.5
done
grep -q '^READY' "$out/anchor.out" || { cat "$out/anchor.err" >&2; echo "anchor not ready" >&2; exit 1; }
sleep 1
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s=%.1fMiB ", $1, $2/1024}' "/proc/$1/status"; }
echo "memory idle: $(rss "$spid")" | tee "$out/memory.txt"

load() { bash "$ANCHORS/load.sh" "$@"; }
field() { sed -n "s|.*$1=\([^ ]*\).*|\1|p"; }
printf '%-8s %-28s %-28s %s\n' clients "topics req/s p50 p99 (ms)" "anchor req/s p50 p99 (ms)" "req/s ratio" | tee "$out/load.txt"
for c in $CONCS; do
    load "$port" /topics.v1.TopicClassifier/Classify "$out/body_600.bin" "$c" "$c" 30 > /dev/null || true
    ours=$(load "$port" /topics.v1.TopicClassifier/Classify "$out/body_600.bin" "$c" "$N_REQ" 120)
    load "$anchor_port" /anchor.v1.Anchor/Classify "$out/body_600.bin" "$c" "$c" 30 > /dev/null || true
    theirs=$(load "$anchor_port" /anchor.v1.Anchor/Classify "$out/body_600.bin" "$c" "$ANCHOR_N_REQ" 120)
    echo "c=$c topics: $ours" >> "$out/raw.txt"; echo "c=$c anchor: $theirs" >> "$out/raw.txt"
    o=$(echo "$ours" | field 'req/s'); a=$(echo "$theirs" | field 'req/s')
    printf '%-8s %-28s %-28s %s\n' "$c" \
        "$o $(echo "$ours" | field p50_ms) $(echo "$ours" | field p99_ms) f=$(echo "$ours" | field failed)" \
        "$a $(echo "$theirs" | field p50_ms) $(echo "$theirs" | field p99_ms) f=$(echo "$theirs" | field failed)" \
        "$(awk -v o="$o" -v a="$a" 'BEGIN {if (a > 0) printf "%.1fx", o / a; else print "n/a"}')" | tee -a "$out/load.txt"
done
batch=$(load "$port" /topics.v1.TopicClassifier/ClassifyBatch "$out/body_batch.bin" 4 400 120)
echo "batch: $batch" >> "$out/raw.txt"
echo "ClassifyBatch of 256 x 600 B at 4 clients: $(echo "$batch" | field 'req/s' | awk '{printf "%.0f documents/s", $1 * 256}'), p99 $(echo "$batch" | field p99_ms) ms, failed $(echo "$batch" | field failed)" | tee -a "$out/load.txt"
echo "memory after load: $(rss "$spid")" | tee -a "$out/memory.txt"
echo "results in $out" >&2
