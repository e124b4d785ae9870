#!/usr/bin/env bash
# Times logins of a Python `ssl` client (the raw protocol, as docs/PROTOCOL.md
# section 9 speaks it) against a release server: from the end of the TLS
# handshake to `hello`, and from connect to `auth_ok`, with and without
# TCP_NODELAY on the client. See bench/login.py.
#
# Usage: bench/login.sh [RUNS]      (default 200 logins per client style)
# Needs: python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin wiresh
B=$PWD/target/release/wiresh
source bench/lib.sh
one_server_workdir
# Exempt loopback: hundreds of logins a second from one address.
start_server --exempt 127.0.0.0/8
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/login.py "${ADDR%:*}" "${ADDR##*:}" "$WIRESH_HOME/token" "${1:-200}"
