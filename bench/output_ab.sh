#!/usr/bin/env bash
# 1 GiB of a command's output (`head -c 1G /dev/zero` to /dev/null) through
# two wiresh binaries, OLD and NEW, each serving its own client, alternated
# round by round with ssh aes128-gcm (over TLS) or iperf3 (over plaintext),
# so that a change is judged against its parent in the same minutes.
#
# Usage: bench/output_ab.sh OLD NEW   (e.g. a copy of main's
#   target/release/wiresh, and this tree's)
# Knobs: ROUNDS=7; MODES="tls plain"; OLD_ENV / NEW_ENV: variables for each
# side's server and client (e.g. NEW_ENV="RUST_LOG=debug"); IP=127.0.0.23,
# PORT=7923 (OLD on PORT, NEW on PORT+10, sshd on PORT-5000, iperf3 on
# PORT-2000).
# Optional: openssh-server (ssh beside TLS), iperf3 (beside plaintext).
#
# Each transfer prints its wall time and its CPU time: the client's (user +
# system) plus the server's, plus the command's (reaped by the spawn
# helper); for ssh, the client's plus sshd's with the session and the
# command (all reaped by the listening sshd). On a shared machine the wall
# time swings by 2x from round to round with the load; the CPU time swings
# far less, and a change that saves none of it will not be faster on a
# loaded machine.
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2")
ROUNDS=${ROUNDS:-7} MODES=${MODES:-"tls plain"}
OLD_ENV=${OLD_ENV:-} NEW_ENV=${NEW_ENV:-}
IP=${IP:-127.0.0.23} PORT=${PORT:-7923}
GIB=1073741824
W=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/sshd.pid" ] && kill "$(cat "$W/sshd.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
source "$(dirname "$0")/lib.sh"

# start NAME BIN PORT ENV: a server of BIN, waited for.
start() {
    mkdir -p "$W/$1"
    mkfifo "$W/$1/ready"
    env $4 WIRESH_HOME="$W/$1/home" "$2" serve --listen "$IP:$3" --allow-plaintext \
        >"$W/$1/ready" 2>"$W/$1/log" &
    pids+=($!)
    echo $! >"$W/$1/pid"
    local line
    while read -r line <&3; do case $line in *"listening on "*) break ;; esac; done 3<"$W/$1/ready"
    cat "$W/$1/ready" >/dev/null &
    # Pins the fingerprint, and checks the server answers.
    env $4 WIRESH_HOME="$W/$1/home" "$2" exec -n -H "$IP:$3" -- true
}
start old "$OLD" "$PORT" "$OLD_ENV"
start new "$NEW" $((PORT + 10)) "$NEW_ENV"

cases=()
for mode in $MODES; do
    case $mode in
    tls)
        cases+=(old_tls new_tls)
        [ -x /usr/sbin/sshd ] && cases+=(ssh_aes128) || echo "no sshd: TLS without ssh (apt-get install openssh-server)"
        ;;
    plain)
        cases+=(old_plain new_plain)
        command -v iperf3 >/dev/null && cases+=(iperf3) || echo "no iperf3: plaintext without it (apt-get install iperf3)"
        ;;
    *) echo "unknown mode $mode (tls, plain)" >&2; exit 2 ;;
    esac
done
if [[ " ${cases[*]} " == *" ssh_aes128 "* ]]; then
    ssh-keygen -q -t ed25519 -N '' -f "$W/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$W/client_key"
    cp "$W/client_key.pub" "$W/authorized_keys"
    printf 'Port %s\nListenAddress %s\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nStrictModes no\nPidFile %s/sshd.pid\n' \
        $((PORT - 5000)) "$IP" "$W" "$W" "$W" >"$W/sshd_config"
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$W/sshd_config"
    SSH="ssh -p $((PORT - 5000)) -i $W/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ControlPath=none root@$IP"
    for _ in $(seq 20); do $SSH true 2>/dev/null && break; sleep 0.2; done
fi

TICK=$(getconf CLK_TCK)
# Clock ticks of CPU of processes, with their reaped descendants.
ticks() {
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat"))); done
    echo "$t"
}
# The processes whose CPU counts for a side: a server and its spawn helper,
# or the listening sshd.
roots_of() {
    case $1 in
    old | new) echo "$(cat "$W/$1/pid")" "$(pgrep -P "$(cat "$W/$1/pid")")" ;;
    ssh) cat "$W/sshd.pid" ;;
    esac
}
# measure SIDE COMMAND: prints "WALL CPU" in seconds.
measure() {
    local roots before after start end
    roots=$(roots_of "$1")
    before=$(ticks $roots)
    start=$(date +%s%N)
    /usr/bin/time -f "%U %S" -o "$W/time" bash -c "$2" || { echo "failed: $2" >&2; return 1; }
    end=$(date +%s%N)
    sleep 0.05 # the server reaps the command
    after=$(ticks $roots)
    awk -v ns=$((end - start)) -v t=$((after - before)) -v hz="$TICK" -v c="$(cat "$W/time")" \
        'BEGIN {split(c, x, " "); printf "%.3f %.2f\n", ns / 1e9, t / hz + x[1] + x[2]}'
}
iperf() {
    rm -f "$W/iperf3.ready"
    mkfifo "$W/iperf3.ready"
    iperf3 -s -1 --forceflush -B "$IP" -p $((PORT - 2000)) >"$W/iperf3.ready" 2>&1 &
    local server=$! line
    {
        while read -r line <&3; do case $line in *"listening on"*) break ;; esac; done
        cat <&3 >/dev/null &
        iperf3 -c "$IP" -p $((PORT - 2000)) -n $GIB -J >"$W/iperf3.json" || true
        wait "$server" || true
    } 3<"$W/iperf3.ready"
    python3 -c "import json; r = json.load(open('$W/iperf3.json')); print('%.3f -' % ($GIB * 8 / r['end']['sum_received']['bits_per_second']))"
}
run_case() {
    local out="head -c $GIB /dev/zero >/dev/null"
    case $1 in
    old_tls) measure old "env $OLD_ENV WIRESH_HOME=$W/old/home $OLD exec -n -H $IP:$PORT -- $out" ;;
    new_tls) measure new "env $NEW_ENV WIRESH_HOME=$W/new/home $NEW exec -n -H $IP:$((PORT + 10)) -- $out" ;;
    old_plain) measure old "env $OLD_ENV WIRESH_HOME=$W/old/home $OLD exec -n --plaintext -H $IP:$PORT -- $out" ;;
    new_plain) measure new "env $NEW_ENV WIRESH_HOME=$W/new/home $NEW exec -n --plaintext -H $IP:$((PORT + 10)) -- $out" ;;
    ssh_aes128) measure ssh "$SSH -c aes128-gcm@openssh.com 'head -c $GIB /dev/zero' >/dev/null" ;;
    iperf3) iperf ;;
    esac
}

declare -A WALL CPU
echo "1 GiB of output, $ROUNDS rounds; load $(load)"
for round in $(seq "$ROUNDS"); do
    line="round $round:"
    for c in "${cases[@]}"; do
        read -r wall cpu < <(run_case "$c")
        WALL[$c]+=" $wall"
        CPU[$c]+=" $cpu"
        line+=" $c ${wall}s/${cpu}cpu"
    done
    echo "$line; load $(cut -d' ' -f1 /proc/loadavg)"
done
# Per round, the first series over the second.
per_round() {
    paste -d' ' <(tr ' ' '\n' <<<"$1" | awk NF) <(tr ' ' '\n' <<<"$2" | awk NF) |
        awk '{printf "%.2f ", $1 / $2}'
}
echo "medians: wall s (GB/s), CPU s of every process involved"
for c in "${cases[@]}"; do
    wall=$(median_list "${WALL[$c]}")
    cpu=$(median_list "${CPU[$c]}")
    printf '  %-11s %s s (%.2f GB/s)  cpu %s s\n' "$c" "$wall" "$(awk -v t="$wall" -v n=$GIB 'BEGIN {print n / t / 1e9}')" "${cpu:--}"
done
if [[ " ${cases[*]} " == *" ssh_aes128 "* ]]; then
    s=${WALL[ssh_aes128]}
    echo "TLS speed / ssh aes128-gcm: old $(ratio "$(median_list "$s")" "$(median_list "${WALL[old_tls]}")")x, new $(ratio "$(median_list "$s")" "$(median_list "${WALL[new_tls]}")")x (medians)"
    echo "  per round: old $(per_round "$s" "${WALL[old_tls]}")| new $(per_round "$s" "${WALL[new_tls]}")"
    echo "ssh CPU / TLS CPU: old $(ratio "$(median_list "${CPU[ssh_aes128]}")" "$(median_list "${CPU[old_tls]}")")x, new $(ratio "$(median_list "${CPU[ssh_aes128]}")" "$(median_list "${CPU[new_tls]}")")x"
fi
if [[ " ${cases[*]} " == *" iperf3 "* ]]; then
    i=${WALL[iperf3]}
    echo "plaintext speed / iperf3: old $(ratio "$(median_list "$i")" "$(median_list "${WALL[old_plain]}")")x, new $(ratio "$(median_list "$i")" "$(median_list "${WALL[new_plain]}")")x (medians)"
    echo "  per round: old $(per_round "$i" "${WALL[old_plain]}")| new $(per_round "$i" "${WALL[new_plain]}")"
fi
echo "load after: $(load)"
