#!/usr/bin/env bash
# One setting against the sustained rate: `apphost bench --no-build --only
# closed,open --rates $RATE` (4400 unless RATE says otherwise) on apphost.yaml
# with SETTING changed, then on apphost.yaml as it is, PAIRS times,
# alternating (the machine's speed drifts over minutes). Prints each open-loop
# run's outbox lag and CPU per component and the closed loop's rates; the
# full output is left in a temporary folder.
# Run after `.ci/setup` and `cargo build --release --workspace`.
#
#   [RATE=480] docs/bench/setting.sh SETTING [PAIRS]      (PAIRS: 2 by default)
#
# SETTING is one of:
#   writers-relays-2   the sender with DB_WRITERS=2 and OUTBOX_RELAYS=2 (4 and 4 by default)
#   acceptor-thread-1  the broker's AMQP acceptor on one Netty thread (remotingThreads=1)
#   parallel-gc        that, and the broker on the parallel collector instead of G1
#   tokio-worker-per-core  the sender and the receiver with a tokio worker per core,
#                      tokio's default (apphost.yaml gives each one worker)
set -euo pipefail
cd "$(dirname "$0")/../.."
setting=${1:?which setting: writers-relays-2, acceptor-thread-1, parallel-gc or tokio-worker-per-core}
pairs=${2:-2}
rate=${RATE:-4400}
# Beside apphost.yaml: a file's projects are found from its folder.
variant=$(mktemp -p . --suffix=.yaml .setting-XXXXXX)
out=$(mktemp -d)
trap 'rm -f "$variant"; rm -rf "$out/published"' EXIT
# The broker's arguments as apphost gives them, read from what it publishes, so a
# variant changes only what it names.
./target/release/apphost publish --target compose --output "$out/published" >/dev/null
java=$(sed -n 's/^ *JAVA_ARGS_APPEND: "\(.*\)"$/\1/p' "$out/published/compose.yaml")
rm -rf "$out/published"
[ -n "$java" ] || { echo "no JAVA_ARGS_APPEND in what apphost publishes for the broker" >&2; exit 1; }
broker_env() { awk -v a="$1" '{print} /kind: artemis/ {print "    env:\n      JAVA_ARGS_APPEND: \"" a "\""}' apphost.yaml; }
case $setting in
writers-relays-2) sed 's/^      RUST_LOG: info$/&\n      DB_WRITERS: "2"\n      OUTBOX_RELAYS: "2"/' apphost.yaml >"$variant" ;;
acceptor-thread-1) broker_env "$java -Dbrokerconfig.acceptorConfigurations.amqp.params.remotingThreads=1" >"$variant" ;;
parallel-gc)
    broker_env "$java -Dbrokerconfig.acceptorConfigurations.amqp.params.remotingThreads=1 -XX:-UseG1GC -XX:+UseParallelGC -XX:-UseStringDeduplication" >"$variant"
    ;;
tokio-worker-per-core) sed "s/TOKIO_WORKER_THREADS: \"1\"/TOKIO_WORKER_THREADS: \"$(nproc)\"/" apphost.yaml >"$variant" ;;
*) echo "unknown setting: $setting" >&2 && exit 2 ;;
esac
cmp -s "$variant" apphost.yaml && { echo "the setting changed nothing in apphost.yaml" >&2; exit 1; }
for pair in $(seq 1 "$pairs"); do
    for file in "$variant" apphost.yaml; do
        name=$([ "$file" = apphost.yaml ] && echo defaults || echo "$setting")
        log="$out/$pair-$name.txt"
        ./target/release/apphost -f "$file" bench --no-build --only closed,open --rates "$rate" >"$log" 2>&1 || true
        echo "== $name (pair $pair; $log)"
        grep -o "closed loop run [0-9]: [0-9]* req/s" "$log" | paste -sd' ' || echo "no closed loop: see $log"
        grep -o "outbox lag p50 [0-9.]* ms p99 [0-9.]* ms\|CPU apphost (load).*sender-db [0-9]* %" "$log" |
            paste -d' ' - - | sed "s/^/  open loop $rate\/s: /" || true
    done
done
