#!/usr/bin/env bash
# Browser test of the playground page: starts the server on a free port of 127.0.0.1,
# opens `/` in headless Chromium, types the seed article, clicks Classify and expects the
# page to show "security", with score bars, coloured paragraphs, highlighted terms and
# right-to-left text; saves a screenshot and prints its path. Stops only the processes it
# started, by PID, and gives up after a few minutes.
#
# Needs cargo and node (18 or later). Installs Debian's chromium package when no
# Chromium is found (as root, or with sudo). PROFILE=release tests the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile="${PROFILE:-dev}"
chromium="${CHROMIUM:-}"
if [[ -z "$chromium" ]]; then
  chromium="$(command -v chromium || command -v chromium-browser || true)"
fi
if [[ -z "$chromium" ]]; then
  echo "installing Debian's chromium package"
  sudo_cmd=()
  [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  chromium="$(command -v chromium)"
fi

# Node 22 has WebSocket built in; 20 and 21 need a flag for it.
node_flags=()
if [[ "$(node -e 'process.stdout.write(typeof WebSocket)')" != "function" ]]; then
  node_flags=(--experimental-websocket)
fi

cargo build --quiet --bin topics --profile "$profile"
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s = ""; process.stdin.on("data", (c) => s += c).on("end", () => process.stdout.write(JSON.parse(s).target_directory))')"
out_dir="$([[ "$profile" == dev ]] && echo debug || echo "$profile")"
binary="$target_dir/$out_dir/topics"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# The seed article: the text of each line of the seed corpus, one paragraph each.
node -e '
  const fs = require("fs");
  const lines = fs.readFileSync("models/corpus/seed.jsonl", "utf8").split("\n").filter((l) => l.trim());
  fs.writeFileSync(process.argv[1], lines.map((l) => JSON.parse(l).text).join("\n"));
' "$work/article.txt"

TOPICS_LOG=info "$binary" serve --addr 127.0.0.1:0 --model models/topics.model 2>"$work/server.log" &
server_pid=$!

addr=""
for _ in $(seq 1 300); do
  addr="$(grep -m1 'serving topics.v1' "$work/server.log" 2>/dev/null | grep -o 'addr=[0-9.:]*' | cut -d= -f2 || true)"
  [[ -n "$addr" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "the server exited:"; cat "$work/server.log"; exit 1; }
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "the server did not start:"; cat "$work/server.log"; exit 1
fi
echo "server at $addr (pid $server_pid)"

timeout 120 node "${node_flags[@]}" tests/playground/drive.mjs \
  "http://$addr/" "$work/article.txt" security "$work/playground.png" "$chromium"
echo "playground test passed; screenshot kept at $work/playground.png"
