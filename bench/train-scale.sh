#!/usr/bin/env bash
# Training at scale: time and peak memory of `topics train` on synthetic corpora.
#
# Usage: bench/train-scale.sh [SIZES]
# Env:   SIZES   documents per corpus (default "10000 30000 100000")
#        WORDS   mean words per document (default 100)
#        FOLDS   cross-validation folds (default 5, what `topics train` does by default; above
#                20,000 documents train scores one held-out fold of them instead)
#        ARGS    extra flags for `topics train` (default none: the default candidates and limits)
#
# Builds the release binary, writes each corpus with `topics corpus synth` into a temporary
# directory (removed on exit), trains on it under /usr/bin/time -v (installing Debian's
# `time` when missing) and prints docs, wall seconds, CPU seconds (user + system), peak
# resident memory, the kept classifier and the number of skipped candidates. The corpora
# are invented words: the models' scores on them mean nothing. The machine is shared:
# compare sizes measured in one run rather than runs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZES="${1:-${SIZES:-10000 30000 100000}}"
WORDS="${WORDS:-100}"
FOLDS="${FOLDS:-5}"
ARGS="${ARGS:-}"

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time ..." >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi

cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$repo/target}/release/topics"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rows=()
for docs in $SIZES; do
    corpus="$work/synth-$docs.jsonl"
    "$bin" corpus synth --docs "$docs" --words "$WORDS" --seed 1 --out "$corpus" 2>/dev/null
    # shellcheck disable=SC2086
    /usr/bin/time -v -o "$work/time-$docs.txt" \
        "$bin" train --corpus "$corpus" --out "$work/model-$docs.model" --folds "$FOLDS" \
        --trained-at 2026-01-01T00:00:00Z $ARGS >"$work/train-$docs.txt" 2>"$work/stderr-$docs.txt" \
        || { cat "$work/stderr-$docs.txt" >&2; exit 1; }
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time-$docs.txt" \
        | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.1f", s }')"
    rss_kb="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time-$docs.txt")"
    cpu="$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f", s}' "$work/time-$docs.txt")"
    kept="$(grep -o 'settings classifier=[^ ]*' "$work/train-$docs.txt" | cut -d= -f2- || true)"
    skipped="$(grep -c 'skipped:' "$work/train-$docs.txt" || true)"
    if grep -q 'held-out fold' "$work/train-$docs.txt"; then selection="held-out fold"; else selection="$FOLDS-fold"; fi
    rows+=("$(printf '| %7d | %-13s | %7s | %7s | %8d | %-28s | %7s |' "$docs" "$selection" "$wall" "$cpu" "$((rss_kb / 1024))" "${kept:-?}" "$skipped")")
    rm -f "$corpus" "$work/model-$docs.model"
done

echo
echo "topics train, $FOLDS folds (one held-out fold above 20,000 documents), ~$WORDS words per document${ARGS:+, flags: $ARGS}; $(nproc) cores"
echo "|    docs | selection     | wall  s |  CPU  s | peak MiB | kept                         | skipped |"
echo "|---------|---------------|---------|---------|----------|------------------------------|---------|"
printf '%s\n' "${rows[@]}"
