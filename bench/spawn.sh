#!/usr/bin/env bash
# Spawn latency against running commands, alone (bench/compare.sh runs the
# same table as its section 6): one `true` (argv) on a live connection
# while 0, 1, 10, 100, 500 and 1,000 `sleep` (argv) run on the same server,
# then 1,000 concurrent `sleep 1` (argv). Plaintext on loopback, so that
# the start, not the cipher, is what moves.
#
# Usage: bench/spawn.sh   (knobs: RUNNING=0,1,10,100,500,1000 SAMPLES=300
# SLEEPS=1000, 0 skips the concurrent sleeps; IDLE=0 idle connections held
# open throughout, to see a start's cost against the server's memory;
# MODES="helper no-helper helper no-helper": a fresh server for each, with
# its spawn helper or with --no-spawn-helper, alternated so that both see
# the same load — only ratios within one run mean anything here)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNING=${RUNNING:-0,1,10,100,500,1000}
SAMPLES=${SAMPLES:-300}
SLEEPS=${SLEEPS:-1000}
IDLE=${IDLE:-0}
cargo build --release -q --bin wiresh --example spawn_latency
B=$PWD/target/release/wiresh
source bench/lib.sh
one_server_workdir
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MOST=$(tr , '\n' <<<"$RUNNING" | sort -n | tail -1)
[ "$SLEEPS" -gt "$MOST" ] && MOST=$SLEEPS
MODES=${MODES:-helper no-helper helper no-helper}
for mode in $MODES; do
    flags=()
    [ "$mode" = no-helper ] && flags=(--no-spawn-helper)
    rm -f "$WORK/ready"
    start_server --allow-plaintext --max-connections $((MOST + IDLE + 100)) --max-commands $((MOST + 100)) \
        --max-startups 1000:100:1000 --max-startups-per-address 1000 "${flags[@]}"
    echo "== $mode: server at $ADDR (pid $SERVER_PID); load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$PWD/target/release/examples/spawn_latency" "$ADDR" "$SERVER_PID" --plaintext \
        --running "$RUNNING" --samples "$SAMPLES" --sleeps "$SLEEPS" --idle "$IDLE"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
