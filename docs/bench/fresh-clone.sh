#!/usr/bin/env bash
# The README's main command on a fresh clone against `cargo build --workspace`
# on another fresh clone of the same commit: each from an empty target
# folder, one after the other (the crates.io registry is shared, so neither
# downloads). Prints both times and their ratio. Run after `.ci/setup`.
#
#   docs/bench/fresh-clone.sh [REPOSITORY]     (default: this checkout)
set -euo pipefail
repo=$(realpath "${1:-$(dirname "$0")/../..}")
work=$(mktemp -d)
stack=""
cleanup() {
    if [ -n "$stack" ]; then kill -INT -- "-$stack" 2>/dev/null || true; wait "$stack" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
git clone -q "$repo" "$work/build" && git clone -q "$repo" "$work/main"
commit=$(git -C "$work/main" rev-parse --short HEAD)

began=$(date +%s.%N)
(cd "$work/build" && cargo build --workspace >"$work/build.log" 2>&1)
build=$(echo "$(date +%s.%N) - $began" | bc)

# The README's main command, headless (no terminal), until all healthy.
began=$(date +%s.%N)
(cd "$work/main" && APPHOST_STATE_DIR="$work/state" exec setsid cargo run -p apphost -- up >"$work/main.log" 2>&1) &
stack=$!  # the session of cargo and apphost: exec setsid kept the pid
until grep -q "all resources are healthy" "$work/main.log" 2>/dev/null; do
    kill -0 "$stack" 2>/dev/null || { echo "the main command ended before all was healthy:" >&2; tail -20 "$work/main.log" >&2; exit 1; }
    sleep 0.2
done
main=$(echo "$(date +%s.%N) - $began" | bc)
grep -A6 "start-up:" "$work/main.log" | sed 's/^[a-z-]* *| ● //' || true

printf 'commit %s\ncargo build --workspace: %.0f s\nthe main command to all healthy: %.0f s\nratio: %.2f\n' \
    "$commit" "$build" "$main" "$(echo "$main / $build" | bc -l)"
