#!/usr/bin/env bash
# Real clients against a silent flood: how many of 40 get in while 2,000
# silent, reconnecting sockets come from 2, 8, 64 and 2,000 other loopback
# addresses (and from 2,000 addresses each in a /24 of its own, as a
# botnet's would be), with the server's default limits. Each case gets a
# fresh server (penalties are per server). See examples/flood.rs.
#
# Then a burst of 1,000 clients at once from one address, without a flood.
#
# Usage: bench/flood.sh [SOCKETS] [CLIENTS]     (default 2000 40)
# Env: PROFILE=debug measures the debug build (quicker to build).
# Needs: root or a hard open-file limit above SOCKETS + 1000.
set -euo pipefail
cd "$(dirname "$0")/.."
SOCKETS=${1:-2000}
CLIENTS=${2:-40}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
    cargo build --release -q --bin wiresh --example flood
else
    cargo build -q --bin wiresh --example flood
fi
B=$PWD/target/$PROFILE/wiresh
FLOOD=$PWD/target/$PROFILE/examples/flood
ulimit -n "$(ulimit -Hn)"
source bench/lib.sh
one_server_workdir
# sources, addresses per /24
for case in "2 250" "8 250" "64 250" "2000 250" "2000 1"; do
    set -- $case
    start_server
    "$B" exec -H "$ADDR" -- true >/dev/null 2>&1  # pins the server
    printf '%s sources, %s to a /24 (load %s): ' "$1" "$2" "$(cut -d' ' -f1-3 /proc/loadavg)"
    "$FLOOD" "$ADDR" "$SOCKETS" "$1" "$CLIENTS" "$2"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    rm -f "$WORK/ready"
done
# A burst from one host (a CI runner, a jump host): 1,000 clients at once,
# no flood, limits raised for them as the issue's test had them.
start_server --max-connections 2000 --max-commands 2000
"$B" exec -H "$ADDR" -- true >/dev/null 2>&1
printf 'a burst of 1000 from one address, --max-connections 2000 --max-commands 2000 (load %s): ' "$(cut -d' ' -f1-3 /proc/loadavg)"
"$FLOOD" "$ADDR" 0 1 1000 250 1000
