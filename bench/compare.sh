#!/usr/bin/env bash
# Measures wiresh against what users compare it with, in one run, and prints
# ratios (absolute numbers on shared machines are noise; ratios in one run are
# not). See ../shared/BASELINES.md for how the reference figures were taken.
#
# Usage: bench/compare.sh
# Needs: hyperfine. Optional: socat (raw TCP relay), openssh-server (ssh).
#   apt-get install -y hyperfine socat openssh-server
set -euo pipefail
cd "$(dirname "$0")/.."

GIB=1073741824
RUNS=${RUNS:-5}
cargo build --release -q --bin wiresh --example latency
B=$PWD/target/release/wiresh
WORK=$(mktemp -d)
export WIRESH_HOME=$WORK/home
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -f "$WORK/sshd/pid" ] && kill "$(cat "$WORK/sshd/pid")" 2>/dev/null || true
    [ -n "${SSH_CM:-}" ] && ssh -O exit -o ControlPath="$SSH_CM" x 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Start a server on a free port and wait for its readiness line.
mkdir -p "$WORK/files" "$WORK/local"
source bench/lib.sh
start_server --allow-plaintext --files-root "$WORK/files"
echo "server at $ADDR (pid $SERVER_PID)"

# Median wall time in seconds of RUNS runs of a shell command.
median_secs() { median_of "$RUNS" "$1"; }

echo
echo "== 1. per-command latency on a live connection"
"$PWD/target/release/examples/latency" "$ADDR" 2000
"$PWD/target/release/examples/latency" "$ADDR" 2000 --plaintext

echo
echo "== 2. one-shot: a fresh process running \`true\` remotely"
hyperfine -N -w 3 -r 30 --export-json "$WORK/oneshot.json" "$B exec -n -H $ADDR -- true" >/dev/null
hyperfine -N -w 3 -r 30 --export-json "$WORK/oneshot-clear.json" "$B exec -n --plaintext -H $ADDR -- true" >/dev/null
printf 'wiresh exec --plaintext -- true: %.2f ms\n' "$(python3 -c "import json;print(json.load(open('$WORK/oneshot-clear.json'))['results'][0]['median']*1000)")"
WIRESH_ONESHOT=$(python3 -c "import json;print(json.load(open('$WORK/oneshot.json'))['results'][0]['median'])")
printf 'wiresh exec -- true: %.2f ms\n' "$(awk -v s="$WIRESH_ONESHOT" 'BEGIN{print s*1000}')"
if command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; then
    D=$WORK/sshd
    mkdir -p "$D"
    ssh-keygen -q -t ed25519 -N '' -f "$D/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$D/client_key"
    cp "$D/client_key.pub" "$D/authorized_keys"
    printf 'Port 2222\nListenAddress 127.0.0.1\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nStrictModes no\nPidFile %s/pid\nSubsystem sftp internal-sftp\n' "$D" "$D" "$D" >"$D/config"
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$D/config"
    SSH_CM=$D/cm
    S="ssh -p 2222 -i $D/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ControlMaster=auto -o ControlPath=$SSH_CM -o ControlPersist=120 root@127.0.0.1"
    for _ in 1 2 3 4 5 6 7 8 9 10; do $S true 2>/dev/null && break; sleep 0.2; done # wait for sshd; opens the master
    hyperfine -N -w 3 -r 30 --export-json "$WORK/ssh.json" "$S true" >/dev/null
    SSH_ONESHOT=$(python3 -c "import json;print(json.load(open('$WORK/ssh.json'))['results'][0]['median'])")
    printf 'ssh (ControlMaster up) true: %.2f ms; wiresh is %sx faster\n' \
        "$(awk -v s="$SSH_ONESHOT" 'BEGIN{print s*1000}')" "$(ratio "$SSH_ONESHOT" "$WIRESH_ONESHOT")"
else
    echo "sshd not installed: skipping the ssh comparison (apt-get install openssh-server)"
fi

echo
echo "== 3. 1 GiB of output to the client (median of $RUNS)"
T_WIRESH=$(median_secs "$B exec -n -H $ADDR -- head -c $GIB /dev/zero > /dev/null")
T_CLEAR=$(median_secs "$B exec -n --plaintext -H $ADDR -- head -c $GIB /dev/zero > /dev/null")
T_PIPE=$(median_secs "head -c $GIB /dev/zero | cat > /dev/null")
printf 'wiresh (TLS): %.3f s  %.2f GB/s\n' "$T_WIRESH" "$(awk -v t="$T_WIRESH" -v n=$GIB 'BEGIN{print n/t/1e9}')"
printf 'wiresh (plaintext): %.3f s  %.2f GB/s; TLS costs %s of plaintext throughput\n' "$T_CLEAR" \
    "$(awk -v t="$T_CLEAR" -v n=$GIB 'BEGIN{print n/t/1e9}')" "$(awk -v a="$T_CLEAR" -v b="$T_WIRESH" 'BEGIN{printf "%.0f%%", (1 - a / b) * 100}')"
printf 'local pipe:   %.3f s  %.2f GB/s\n' "$T_PIPE" "$(awk -v t="$T_PIPE" -v n=$GIB 'BEGIN{print n/t/1e9}')"
if command -v socat >/dev/null; then
    # The relay: socat runs head and serves its output to one TCP client.
    T_SOCAT=$(median_secs "socat -b131072 -u EXEC:'head -c $GIB /dev/zero' TCP-LISTEN:34999,reuseaddr,bind=127.0.0.1 & until socat -b131072 -u TCP:127.0.0.1:34999 - > /dev/null 2>&1; do sleep 0.02; done; wait")
    printf 'socat relay:  %.3f s  %.2f GB/s\n' "$T_SOCAT" "$(awk -v t="$T_SOCAT" -v n=$GIB 'BEGIN{print n/t/1e9}')"
    printf 'wiresh / raw TCP relay throughput: %s\n' "$(ratio "$T_SOCAT" "$T_WIRESH")"
fi
printf 'wiresh / local pipe throughput: %s\n' "$(ratio "$T_PIPE" "$T_WIRESH")"
echo "server peak RSS over the whole run: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER_PID/status)"

echo
echo "== 4. copying a 1 GiB file (median of $RUNS; every copy is fsynced by wiresh)"
head -c $GIB /dev/urandom >"$WORK/local/big.bin"
T_PUT=$(median_secs "'$B' put -q -H $ADDR '$WORK/local/big.bin' big.bin")
T_GET=$(median_secs "rm -f '$WORK/local/got.bin'; '$B' get -q -H $ADDR big.bin '$WORK/local/got.bin'")
cmp "$WORK/local/big.bin" "$WORK/local/got.bin" || { echo "get returned different bytes" >&2; exit 1; }
printf 'wiresh put:   %.3f s  %.2f GB/s\n' "$T_PUT" "$(awk -v t="$T_PUT" -v n=$GIB 'BEGIN{print n/t/1e9}')"
printf 'wiresh get:   %.3f s  %.2f GB/s\n' "$T_GET" "$(awk -v t="$T_GET" -v n=$GIB 'BEGIN{print n/t/1e9}')"
if command -v socat >/dev/null; then
    T_RAW=$(median_secs "socat -b131072 -u FILE:'$WORK/local/big.bin' TCP-LISTEN:34998,reuseaddr,bind=127.0.0.1 & until socat -b131072 -u TCP:127.0.0.1:34998 CREATE:'$WORK/local/raw.bin' 2>/dev/null; do sleep 0.02; done; wait; sync -f '$WORK/local/raw.bin'")
    printf 'raw TCP (socat, then sync): %.3f s  %.2f GB/s; wiresh put / raw: %s\n' "$T_RAW" \
        "$(awk -v t="$T_RAW" -v n=$GIB 'BEGIN{print n/t/1e9}')" "$(ratio "$T_RAW" "$T_PUT")"
fi
if [ -n "${S:-}" ]; then
    T_SCP=$(median_secs "scp -q -P 2222 -i $WORK/sshd/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ControlPath=$SSH_CM '$WORK/local/big.bin' root@127.0.0.1:'$WORK/local/scp.bin'")
    printf 'scp (ControlMaster up): %.3f s  %.2f GB/s; wiresh put is %sx its speed\n' "$T_SCP" \
        "$(awk -v t="$T_SCP" -v n=$GIB 'BEGIN{print n/t/1e9}')" "$(ratio "$T_SCP" "$T_PUT")"
fi
echo "server peak RSS over the whole run: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER_PID/status)"
