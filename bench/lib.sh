# Shared by the benchmark scripts (sourced, not run). start_server needs $B
# (the wiresh binary) and $WORK (a scratch directory).

# Makes $WORK, a scratch directory holding $WIRESH_HOME, removed with the
# server (SERVER_PID) when the script exits: for scripts with one server.
one_server_workdir() {
    WORK=$(mktemp -d)
    export WIRESH_HOME=$WORK/home
    trap 'stop_one_server' EXIT
}
stop_one_server() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}

# Starts `wiresh serve` on a free loopback port with the given extra flags,
# waits for its readiness line, and sets SERVER_PID and ADDR.
start_server() {
    mkfifo "$WORK/ready"
    "$B" serve --listen 127.0.0.1:0 "$@" >"$WORK/ready" 2>"$WORK/server.log" &
    SERVER_PID=$!
    local line
    while read -r line <&3; do
        case $line in *"listening on "*) break ;; esac
    done 3<"$WORK/ready"
    ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' <<<"$line")
    cat "$WORK/ready" >/dev/null &
}

# Starts N servers on free loopback ports, each with its home $WORK/sI and
# its output in $WORK/sI/out, all taking one new token ($WIRESH_HOME/token);
# adds their pids to PIDS and waits (60 s at most) for each one's readiness
# line, which says where it listens.
start_fleet() {
    local n=$1 i deadline
    mkdir -p "$WIRESH_HOME"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WIRESH_HOME/token")
    for i in $(seq 1 "$n"); do
        mkdir -p "$WORK/s$i"
        WIRESH_HOME=$WORK/s$i "$B" serve --listen 127.0.0.1:0 --token-file "$WIRESH_HOME/token" \
            >"$WORK/s$i/out" 2>/dev/null &
        PIDS+=($!)
    done
    deadline=$((SECONDS + 60))
    for i in $(seq 1 "$n"); do
        until grep -q "listening on" "$WORK/s$i/out" 2>/dev/null; do
            [ $SECONDS -lt $deadline ] || { echo "server $i did not start" >&2; exit 1; }
            sleep 0.05
        done
    done
}

# Median wall time in seconds of N runs of a shell command. A failing run
# ends the benchmark, unless the third argument is `tolerant`: then it still
# counts, with a note on stderr (an ssh tool that loses hosts under load).
median_of() {
    local n=$1 cmd=$2 tolerant=${3:-} i times=()
    for ((i = 0; i < n; i++)); do
        local s e
        s=$(date +%s%N)
        if ! bash -c "$cmd"; then
            [ -n "$tolerant" ] || { echo "bench command failed: $cmd" >&2; return 1; }
            echo "note: a run exited non-zero (some hosts failed): ${cmd:0:70}..." >&2
        fi
        e=$(date +%s%N)
        times+=("$((e - s))")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.4f\n", a[int((NR+1)/2)]/1e9}'
}

# The load average over 1, 5 and 15 minutes, said beside each figure.
load() { cut -d' ' -f1-3 /proc/loadavg; }

# The median of a space-separated list of numbers (empty words and `-`,
# a figure not taken, left out).
median_list() { tr ' ' '\n' <<<"$1" | awk '$1 != "" && $1 != "-"' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# a / b, two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# Median over N runs of what iperf3 moves through loopback TCP (BYTES each,
# memory to memory, one stream), in GB/s; each run has a one-off server on
# a free port, and its client starts once the server says it listens.
# (`iperf3 -J` exits 0 even when it could not connect: its JSON says so.)
iperf3_gbps() {
    local n=$1 bytes=$2 i port line rates=()
    for ((i = 0; i < n; i++)); do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        rm -f "$WORK/iperf3.ready"
        mkfifo "$WORK/iperf3.ready"
        iperf3 -s -1 --forceflush -B 127.0.0.1 -p "$port" >"$WORK/iperf3.ready" 2>&1 &
        local server=$!
        {
            while read -r line <&3; do
                case $line in *"listening on"*) break ;; esac
            done
            # The fifo stays open for the server's later lines.
            cat <&3 >/dev/null &
            iperf3 -c 127.0.0.1 -p "$port" -n "$bytes" -J >"$WORK/iperf3.json" || true
            wait "$server" || true
        } 3<"$WORK/iperf3.ready"
        rates+=("$(python3 -c "
import json, sys
run = json.load(open('$WORK/iperf3.json'))
if 'error' in run:
    sys.exit('iperf3: ' + run['error'])
print(run['end']['sum_received']['bits_per_second'] / 8e9)")") || return 1
    done
    printf '%s\n' "${rates[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]}'
}
