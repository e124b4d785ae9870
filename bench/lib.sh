# Shared by the benchmark scripts (sourced): needs $B (the wiresh binary)
# and $WORK (a scratch directory).

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
