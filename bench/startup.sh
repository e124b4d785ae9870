#!/usr/bin/env bash
# Before and after for the one-shot client: two wiresh binaries (OLD, say
# main's target/release/wiresh copied aside first, and NEW, by default this
# tree's release build) in one run, alternating, with /bin/sh -c true
# beside them. Only ratios within one run mean anything on a shared machine.
#
# Usage: bench/startup.sh OLD [NEW]
# Needs: hyperfine, python3. Knobs: ROUNDS=10 rounds of RUNS=30 runs each.
#
# Each binary talks to a server of its own (both run by OLD, so that the
# servers are alike and only the client and the master differ) through a
# master of its own (a master serves one target: the two must not share
# one). Then the masters are stopped and each binary runs a cold one-shot
# over TLS (a full handshake). Every round is one hyperfine run of every
# command in turn: load that comes and goes hits them all alike; the figure
# of each command is the median of its rounds' medians.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=$(realpath "${1:?usage: bench/startup.sh OLD [NEW]}")
if [ -z "${2:-}" ]; then
    cargo build --release -q --bin wiresh
fi
NEW=$(realpath "${2:-target/release/wiresh}")
ROUNDS=${ROUNDS:-10}
RUNS=${RUNS:-30}
source bench/lib.sh
WORK=$(mktemp -d)
export WIRESH_HOME=$WORK/home
PIDS=()
cleanup() {
    for b in "$OLD" "$NEW"; do
        for a in "${ADDRS[@]:-}"; do "$b" master --stop -H "$a" >/dev/null 2>&1 || true; done
    done
    [ ${#PIDS[@]} -eq 0 ] || kill "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Two servers (OLD's binary) on free loopback ports, one token.
ADDRS=()
for i in 1 2; do
    mkfifo "$WORK/ready$i"
    "$OLD" serve --listen 127.0.0.1:0 --pid-file "$WORK/pid$i" >"$WORK/ready$i" 2>/dev/null &
    PIDS+=($!)
    while read -r line <&3; do
        case $line in *"listening on "*) break ;; esac
    done 3<"$WORK/ready$i"
    ADDRS+=("$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' <<<"$line")")
    cat "$WORK/ready$i" >/dev/null &
done
A_OLD=${ADDRS[0]} A_NEW=${ADDRS[1]}
"$OLD" exec -n -H "$A_OLD" -- true # pins each server's fingerprint
"$NEW" exec -n -H "$A_NEW" -- true

# Runs ROUNDS hyperfine runs of the given commands; prints each one's
# median of medians (seconds), one per line, in order.
rounds() {
    local r
    for ((r = 0; r < ROUNDS; r++)); do
        hyperfine -N -w 3 -r "$RUNS" --export-json "$WORK/round$r.json" "$@" \
            >/dev/null 2>"$WORK/hyperfine.err" || { cat "$WORK/hyperfine.err" >&2; return 1; }
    done
    python3 - "$WORK" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{work}/round{r}.json"))["results"] for r in range(rounds)]
for c in range(len(runs[0])):
    print(statistics.median(run[c]["median"] for run in runs))
EOF
}
ms() { awk -v s="$1" 'BEGIN {printf "%.3f", s * 1000}'; }
ratio3() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

echo "old: $OLD"
echo "new: $NEW"
"$OLD" master -H "$A_OLD" >/dev/null
"$NEW" master -H "$A_NEW" >/dev/null
echo "== through a master ($ROUNDS rounds of $RUNS; load $(load))"
mapfile -t M < <(rounds "$OLD exec -n -H $A_OLD -- true" "$NEW exec -n -H $A_NEW -- true" \
    "$OLD --version" "$NEW --version" "/bin/sh -c true")
printf 'old exec: %s ms = %sx sh -c true\n' "$(ms "${M[0]}")" "$(ratio3 "${M[0]}" "${M[4]}")"
printf 'new exec: %s ms = %sx sh -c true\n' "$(ms "${M[1]}")" "$(ratio3 "${M[1]}" "${M[4]}")"
printf 'old --version: %s ms; new --version: %s ms; sh -c true: %s ms\n' \
    "$(ms "${M[2]}")" "$(ms "${M[3]}")" "$(ms "${M[4]}")"
printf 'new/old: exec %s, --version %s\n' "$(ratio3 "${M[1]}" "${M[0]}")" "$(ratio3 "${M[3]}" "${M[2]}")"
"$OLD" master --stop -H "$A_OLD" >/dev/null
"$NEW" master --stop -H "$A_NEW" >/dev/null
# A stopped master removes its socket before it exits; wait for that.
while ls "$WIRESH_HOME"/masters/*.sock >/dev/null 2>&1; do sleep 0.05; done
echo "== cold, over TLS ($ROUNDS rounds of $RUNS; load $(load))"
mapfile -t C < <(rounds "$OLD exec -n -H $A_OLD -- true" "$NEW exec -n -H $A_NEW -- true" "/bin/sh -c true")
printf 'old: %s ms; new: %s ms; sh -c true: %s ms; new/old %s\n' \
    "$(ms "${C[0]}")" "$(ms "${C[1]}")" "$(ms "${C[2]}")" "$(ratio3 "${C[1]}" "${C[0]}")"
echo "load at the end: $(load)"
