#!/usr/bin/env bash
# Fan-out: wiresh against pdsh, parallel-ssh and ClusterShell, in one run,
# with ratios (absolute numbers on a shared machine are noise).
#
#   1. `true` on 50 and 200 hosts, the same fan-out (64) for every tool: the
#      ssh tools over one loopback sshd through ssh_config aliases (see
#      ../shared/BASELINES.md, "Fan-out anchors"), wiresh over 200 servers.
#   2. The client's peak RSS with 1,000 hosts (1,000 inventory names spread
#      over the 200 servers, 5 names each).
#   3. 200 hosts x 10 MB of output each, streamed: wall time and the
#      client's peak RSS, against 200 x 1 MB and 200 x 30 MB (memory must
#      not follow the size of the output).
#
# Usage: bench/fanout.sh      (RUNS=5 wiresh runs per median; SSH_RUNS=1;
#                             SSH=0 leaves the ssh tools out)
# Needs: apt-get install -y openssh-server pdsh pssh clustershell
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SSH_RUNS=${SSH_RUNS:-1}
SSH=${SSH:-1}
SERVERS=200
FANOUT=64
cargo build --release -q --bin wiresh
B=$PWD/target/release/wiresh
WORK=$(mktemp -d)
source bench/lib.sh
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/sshd/pid" ] && kill "$(cat "$WORK/sshd/pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the servers: one token for all, each its own home and TLS identity ---
export WIRESH_HOME=$WORK/client
start_fleet "$SERVERS"
ADDRS=()
for i in $(seq 1 "$SERVERS"); do
    ADDRS+=("$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$WORK/s$i/out")")
done
hosts() { local IFS=,; echo "${ADDRS[*]:0:$1}"; }
echo "$SERVERS wiresh servers up"

# --- one sshd, many aliases ---
D=$WORK/sshd
if [ "$SSH" = 1 ]; then
mkdir -p "$D" /run/sshd
SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$D/host" && ssh-keygen -q -t ed25519 -N '' -f "$D/client"
cp "$D/client.pub" "$D/auth"
printf 'Port %s\nListenAddress 127.0.0.1\nHostKey %s/host\nAuthorizedKeysFile %s/auth\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nStrictModes no\nPidFile %s/pid\nMaxStartups 300:30:600\n' \
    "$SSH_PORT" "$D" "$D" "$D" >"$D/sshd_config"
/usr/sbin/sshd -f "$D/sshd_config"
{
    for i in $(seq 1 "$SERVERS"); do printf 'Host h%d\n  HostName 127.0.0.1\n  Port %s\n' "$i" "$SSH_PORT"; done
    printf 'Host *\n  IdentityFile %s/client\n  User root\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n' "$D"
} >"$D/ssh_config"
for _ in $(seq 1 50); do ssh -F "$D/ssh_config" h1 true 2>/dev/null && break; sleep 0.1; done
fi

QUIET='>/dev/null 2>&1'

echo
echo "== 1. \`true\` on many hosts, fan-out $FANOUT"
# The first run pins every server's fingerprint (TLS on first use).
"$B" exec -n --fanout $FANOUT -H "$(hosts $SERVERS)" -- true 2>/dev/null
for n in 50 200; do
    w=$(median_of "$RUNS" "$B exec -n --fanout $FANOUT -H '$(hosts "$n")' -- true $QUIET")
    [ "$SSH" = 1 ] || { echo "$n hosts: wiresh ${w} s"; continue; }
    p=$(median_of "$SSH_RUNS" "PDSH_SSH_ARGS='-F $D/ssh_config' pdsh -R ssh -f $FANOUT -w 'h[1-$n]' true $QUIET" tolerant)
    q=$(median_of "$SSH_RUNS" "parallel-ssh -p $FANOUT -x '-F $D/ssh_config' -H '$(seq -f 'h%g' 1 "$n" | paste -sd' ')' true $QUIET" tolerant)
    c=$(median_of "$SSH_RUNS" "clush -f $FANOUT -o '-F $D/ssh_config' -w 'h[1-$n]' true $QUIET" tolerant)
    fastest=$(printf '%s\n' "$p" "$q" "$c" | sort -n | head -1)
    echo "$n hosts: wiresh ${w} s; pdsh ${p} s, parallel-ssh ${q} s, clush ${c} s;" \
        "fastest ssh tool / wiresh = $(ratio "$fastest" "$w")x"
done

echo
echo "== 2. client peak RSS with 1,000 hosts (inventory names over $SERVERS servers)"
{
    echo '[groups]'
    echo 'thousand = "n[0001-1000]"'
    for k in $(seq 1 1000); do
        a=${ADDRS[$(((k - 1) % SERVERS))]}
        printf '[hosts.n%04d]\naddress = "%s"\nport = %s\n' "$k" "${a%:*}" "${a##*:}"
    done
} >"$WIRESH_HOME/hosts.toml"
for display in "" "--gather" "--json"; do
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$B" exec -n --fanout $FANOUT -g thousand $display -- true >/dev/null 2>"$WORK/err"
    read -r secs kib <"$WORK/time"
    echo "1000 hosts ${display:-(live)}: $(grep -m1 "^wiresh: " "$WORK/err"), ${secs} s, peak RSS $((kib / 1024)) MiB (target < 64 MiB)"
done

echo
echo "== 3. $SERVERS hosts streaming output to the client (stdout to /dev/null)"
for mb in 1 10 30; do
    bytes=$((mb * 1000000))
    cmd="yes 'a line of output of about sixty bytes, repeated over and over' | head -c $bytes"
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$B" exec -n --fanout $FANOUT -H "$(hosts $SERVERS)" -- "$cmd" >/dev/null 2>"$WORK/err"
    read -r secs kib <"$WORK/time"
    total=$((SERVERS * bytes))
    echo "$SERVERS x $mb MB: ${secs} s ($(awk -v t=$total -v s="$secs" 'BEGIN{printf "%.0f", t/s/1e6}') MB/s), client peak RSS $((kib / 1024)) MiB"
done

# Memory follows --fanout (hosts streaming at once), not the output's size.
cmd="yes 'a line of output of about sixty bytes, repeated over and over' | head -c 10000000"
/usr/bin/time -f '%e %M' -o "$WORK/time" "$B" exec -n --fanout 16 -H "$(hosts $SERVERS)" -- "$cmd" >/dev/null 2>"$WORK/err"
read -r secs kib <"$WORK/time"
echo "$SERVERS x 10 MB, --fanout 16: ${secs} s, client peak RSS $((kib / 1024)) MiB"

echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
