#!/usr/bin/env bash
# Keystroke round trip on a remote terminal: wiresh (`wiresh exec -t`)
# against `ssh -tt`, over loopback, in one run.
#
# Both run `cat` on a remote pty inside tmux; a key is typed with tmux and
# the clock stops when its echo (made by the remote terminal) reaches tmux's
# screen. Keys are sent and echoes read through one tmux control-mode client
# (`tmux -C`) per session, so no process is started per key; the two tools
# are measured in alternating rounds, so that a noisy machine hurts both
# alike. Prints the median, p90 and mean of each, and the ratio.
#
# Usage: bench/keystroke.sh [KEYS]   (default 2000 keys per tool: fewer give
# medians that move by 20% from run to run on a shared machine)
# Needs: tmux, python3, openssh-server (for the ssh side; without it only
# wiresh is measured).  apt-get install -y tmux openssh-server
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${1:-2000}
cargo build --release -q --bin wiresh
B=$PWD/target/release/wiresh
WORK=$(mktemp -d)
export WIRESH_HOME=$WORK/home
SOCK=wiresh-bench-$$
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null || true
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCK" # tmux leaves its socket
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -f "$WORK/sshd/pid" ] && kill "$(cat "$WORK/sshd/pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The wiresh server (TLS, as ssh is encrypted), on a free port.
source bench/lib.sh
start_server
# Pin the fingerprint now, so the session starts without a message.
"$B" exec -n -H "$ADDR" -- true 2>/dev/null

printf 'set -g status off\n' >"$WORK/tmux.conf"
T="tmux -L $SOCK -f $WORK/tmux.conf"
$T new-session -d -s wiresh -x 80 -y 24 "$B exec -t -H $ADDR -- cat"
SESSIONS=wiresh

if [ -x /usr/sbin/sshd ]; then
    D=$WORK/sshd
    mkdir -p "$D" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$D/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$D/client_key"
    cp "$D/client_key.pub" "$D/authorized_keys"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'Port %s\nListenAddress 127.0.0.1\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nStrictModes no\nPidFile %s/pid\n' \
        "$PORT" "$D" "$D" "$D" >"$D/config"
    /usr/sbin/sshd -f "$D/config"
    S="ssh -p $PORT -i $D/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1"
    for _ in $(seq 50); do $S true 2>/dev/null && break; sleep 0.1; done # wait for sshd
    $T new-session -d -s ssh -x 80 -y 24 "$S -tt cat"
    SESSIONS="wiresh ssh"
else
    echo "sshd not installed: measuring wiresh only (apt-get install openssh-server)"
fi

python3 - "$SOCK" "$WORK/tmux.conf" "$KEYS" $SESSIONS <<'EOF'
import statistics, subprocess, sys, time

sock, conf, keys, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

class Pane:
    """One tmux control-mode client attached to a session."""
    def __init__(self, session):
        self.session = session
        self.p = subprocess.Popen(["tmux", "-L", sock, "-f", conf, "-C", "attach", "-t", session],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def round_trip(self, key, limit=10.0):
        """Seconds from typing `key` to its echo in a %output notification."""
        start = time.perf_counter()
        self.p.stdin.write(f"send-keys -t {self.session} -l {key}\n".encode())
        while True:
            line = self.p.stdout.readline()
            if not line:
                sys.exit(f"tmux control client for {self.session} ended")
            if line.startswith(b"%output ") and key.encode() in line.split(b" ", 2)[2]:
                return time.perf_counter() - start
            if time.perf_counter() - start > limit:
                sys.exit(f"{self.session}: no echo of {key!r} within {limit} s")

panes = {s: Pane(s) for s in sessions}
letters = "abcdefghijklmnopqrstuvwxyz"
# Warm up (and wait until each remote `cat` is there: the first echo).
for pane in panes.values():
    for i in range(20):
        pane.round_trip(letters[i % 26], limit=30.0)
times = {s: [] for s in sessions}
block = 20
for start in range(0, keys, block):
    for s, pane in panes.items():
        for i in range(start, min(start + block, keys)):
            times[s].append(pane.round_trip(letters[i % 26]))

def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1e3, xs[int(len(xs) * 0.9)] * 1e3, statistics.mean(xs) * 1e3

print(f"keystroke round trip, {keys} keys each (typed with tmux, until the remote echo is on its screen):")
for s in sessions:
    med, p90, mean = summary(times[s])
    label = "wiresh exec -t" if s == "wiresh" else "ssh -tt"
    print(f"  {label:15} median {med:.3f} ms  p90 {p90:.3f} ms  mean {mean:.3f} ms")
if "ssh" in times:
    ratio = statistics.median(times["ssh"]) / statistics.median(times["wiresh"])
    print(f"  wiresh is {ratio:.2f}x ssh's speed (ratio of medians; > 1 means faster)")
for pane in panes.values():
    pane.p.stdin.close()
EOF
