#!/usr/bin/env bash
# The server's cost per command, two server binaries against each other in
# one run: fresh servers alternated (OLD, NEW, OLD, NEW, ...), each taking
# N concurrent `sleep 1` (argv and as a shell line, over connections opened
# first: `examples/concurrency`) and the live-connection latency of one
# `true` (`examples/latency`); bash's own floor for the sleeps (N `sleep 1`
# started at once by bash) is taken between them. Plaintext on loopback,
# so that the start, not the cipher, is what moves. On a shared machine
# only ratios within one run mean anything; the load is printed with each.
#
# Usage: OLD=/path/to/old/wiresh bench/spawn_ab.sh
# (knobs: NEW=target/release/wiresh ROUNDS=3 SLEEPS=1000 SAMPLES=300)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:?OLD=path of the wiresh binary to compare with}
NEW=${NEW:-$PWD/target/release/wiresh}
ROUNDS=${ROUNDS:-3}
SLEEPS=${SLEEPS:-1000}
SAMPLES=${SAMPLES:-300}
cargo build --release -q --bin wiresh --example concurrency --example latency
EX=$PWD/target/release/examples
source bench/lib.sh
one_server_workdir
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
declare -A ARGV SHELL_ LAT
for round in $(seq "$ROUNDS"); do
    for which in old new; do
        B=$OLD
        [ "$which" = new ] && B=$NEW
        rm -f "$WORK/ready"
        start_server --allow-plaintext --max-connections $((SLEEPS + 100)) --max-commands $((SLEEPS + 100)) \
            --max-startups 1000:100:1000 --max-startups-per-address 1000
        out=$("$EX/concurrency" "$ADDR" "$SERVER_PID" "$SLEEPS" 0 --plaintext | grep concurrent)
        lat=$("$EX/latency" "$ADDR" "$SAMPLES" --plaintext)
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        a=$(sed -n 's/.*(argv) all done in \([0-9.]*\) s.*/\1/p' <<<"$out")
        s=$(sed -n 's/.*(shell) all done in \([0-9.]*\) s.*/\1/p' <<<"$out")
        l=$(sed -n 's/.*wiresh (live connection) \([0-9.]*\) ms.*/\1/p' <<<"$lat")
        ARGV[$which]+="$a "
        SHELL_[$which]+="$s "
        LAT[$which]+="$l "
        echo "round $round $which: $SLEEPS sleeps argv $a s, shell $s s; latency: ${lat#*median of }; load $(load)"
    done
    s=$(date +%s%N)
    bash -c "for i in \$(seq $SLEEPS); do sleep 1 & done; wait"
    e=$(date +%s%N)
    floor=$(awk -v n=$((e - s)) 'BEGIN {printf "%.3f", n / 1e9}')
    ARGV[bash]+="$floor "
    echo "round $round bash floor: $SLEEPS \`sleep 1\` started by bash at once: $floor s; load $(load)"
done
echo "medians of $ROUNDS: argv sleeps old $(median_list "${ARGV[old]}") s, new $(median_list "${ARGV[new]}") s, bash $(median_list "${ARGV[bash]}") s;" \
    "shell sleeps old $(median_list "${SHELL_[old]}") s, new $(median_list "${SHELL_[new]}") s;" \
    "latency old $(median_list "${LAT[old]}") ms, new $(median_list "${LAT[new]}") ms; load after $(load)"
