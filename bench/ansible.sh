#!/usr/bin/env bash
# Ansible over wiresh against Ansible over ssh and over Mitogen, in one run,
# with ratios (absolute numbers on a shared machine are noise).
#
# One playbook (bench/ansible/play.yml: a command, a shell pipe, a
# directory, a 100 kB copy, a templated file, a fetch, a stat; no fact
# gathering) on HOSTS hosts, forks = hosts, pipelining on:
#   - ssh: Ansible's ssh connection with ControlPersist, over one loopback
#     sshd serving every "host" through ssh_config aliases
#     (../shared/BASELINES.md, "Ansible anchors");
#   - mitogen: Mitogen's mitogen_linear strategy over the same sshd;
#   - wiresh: the wiresh.remote.wiresh connection (ansible/), one
#     `wiresh serve` per host on its own port, with its worker and without.
# The tools take turns, round after round (RUNS rounds, medians).
# Each run starts cold: no ssh master, no Mitogen or wiresh process left
# from an earlier run. Every run must succeed on every host.
#
# Usage: bench/ansible.sh    (HOSTS=20; RUNS=1 round, the medians when
#                            more; VENV=bench/.venv, made on first use
#                            with ansible-core, mitogen and the wiresh
#                            package; PROFILE=release, or dev for quicker
#                            builds)
# Needs: apt-get install -y openssh-server; Python 3 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=${HOSTS:-20}
RUNS=${RUNS:-1}
PROFILE=${PROFILE:-release}
VENV=${VENV:-$PWD/bench/.venv}

# --- the tools ---
if [ ! -x "$VENV/bin/ansible-playbook" ] || [ ! -x "$VENV/bin/maturin" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'maturin==1.16.0' 'ansible-core==2.19.*' 'mitogen==0.3.54'
fi
if [ "$PROFILE" = release ]; then
    cargo build --release -q --bin wiresh
    B=$PWD/target/release/wiresh
    (cd python && VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH "$VENV/bin/maturin" develop -q --release)
else
    cargo build -q --bin wiresh
    B=$PWD/target/debug/wiresh
    (cd python && VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH "$VENV/bin/maturin" develop -q)
fi
MITO=$("$VENV/bin/python" -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')/plugins/strategy
PYTHON=$(command -v /usr/bin/python3 || command -v python3)

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

# The collection, installed as a user would.
"$VENV/bin/ansible-galaxy" collection install -p "$WORK/collections" ./ansible >/dev/null
head -c 100000 /dev/urandom >"$WORK/payload.bin"
cp bench/ansible/play.yml bench/ansible/motd.j2 "$WORK/"

# --- wiresh: one server per host, one token ---
export WIRESH_HOME=$WORK/client
start_fleet "$HOSTS"

# --- ssh: one sshd, many aliases ---
D=$WORK/sshd
mkdir -p "$D" /run/sshd
SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$D/host" && ssh-keygen -q -t ed25519 -N '' -f "$D/client"
cp "$D/client.pub" "$D/auth"
printf 'Port %s\nListenAddress 127.0.0.1\nHostKey %s/host\nAuthorizedKeysFile %s/auth\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nStrictModes no\nPidFile %s/pid\nMaxStartups 300:30:600\nMaxSessions 200\n' \
    "$SSH_PORT" "$D" "$D" "$D" >"$D/sshd_config"
/usr/sbin/sshd -f "$D/sshd_config"
{
    for i in $(seq 1 "$HOSTS"); do printf 'Host h%d\n  HostName 127.0.0.1\n  Port %s\n' "$i" "$SSH_PORT"; done
    printf 'Host *\n  IdentityFile %s/client\n  User root\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n' "$D"
} >"$D/ssh_config"
for _ in $(seq 1 50); do ssh -F "$D/ssh_config" h1 true 2>/dev/null && break; sleep 0.1; done

# --- inventories ---
common="ansible_python_interpreter=$PYTHON work=$WORK/remote fetched=$WORK/fetched payload=$WORK/payload.bin"
{
    echo "[fleet]"
    for i in $(seq 1 "$HOSTS"); do echo "h$i"; done
    echo "[fleet:vars]"
    echo "ansible_connection=ssh"
    echo "ansible_ssh_common_args=-F $D/ssh_config"
    echo "$common" | tr ' ' '\n'
} >"$WORK/ssh.ini"
{
    echo "[fleet]"
    for i in $(seq 1 "$HOSTS"); do
        echo "h$i ansible_host=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$WORK/s$i/out")"
    done
    echo "[fleet:vars]"
    echo "ansible_connection=wiresh.remote.wiresh"
    echo "$common" | tr ' ' '\n'
} >"$WORK/wiresh.ini"

. bench/lib.sh

# One cold run of the playbook; fails the benchmark unless every host
# passed every task. Each run has its own control directories, so no ssh
# master or wiresh relay is left from the one before.
play() {
    local inv=$1
    shift
    local run=$WORK/run.$RANDOM
    mkdir -p "$run"
    rm -rf "$WORK/remote" "$WORK/fetched"
    env ANSIBLE_COLLECTIONS_PATH="$WORK/collections" ANSIBLE_PIPELINING=True \
        ANSIBLE_FORKS="$HOSTS" ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_CONTROL_PATH_DIR="$run/cp" \
        ANSIBLE_WIRESH_CONTROL_PATH_DIR="$run/wcp" ANSIBLE_LOCAL_TEMP="$run/tmp" \
        ANSIBLE_PYTHON_INTERPRETER="$PYTHON" PYTHONWARNINGS=ignore "$@" \
        "$VENV/bin/ansible-playbook" -i "$WORK/$inv" "$WORK/play.yml" >"$run/out" 2>&1 || {
        cat "$run/out" >&2
        return 1
    }
    grep -Eq "failed=[1-9]|unreachable=[1-9]" "$run/out" && { cat "$run/out" >&2; return 1; }
    [ "$(grep -c 'ok=7 ' "$run/out")" = "$HOSTS" ] || { cat "$run/out" >&2; return 1; }
}

# One timed run; the time in seconds.
timed() {
    local s e
    s=$(date +%s%N)
    "$@" || { echo "bench run failed: $*" >&2; exit 1; }
    e=$(date +%s%N)
    awk -v d="$((e - s))" 'BEGIN {printf "%.4f\n", d / 1e9}'
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The tools take turns, round after round, so that a change in the
# machine's load falls on all of them alike.
echo "== $HOSTS hosts, 7 tasks, forks $HOSTS, pipelining on, $RUNS round(s) (median)"
ssh_t=() mitogen_t=() wiresh_t=() plain_t=()
for round in $(seq 1 "$RUNS"); do
    ssh_t+=("$(timed play ssh.ini)")
    mitogen_t+=("$(timed play ssh.ini ANSIBLE_STRATEGY_PLUGINS="$MITO" ANSIBLE_STRATEGY=mitogen_linear)")
    wiresh_t+=("$(timed play wiresh.ini)")
    plain_t+=("$(timed play wiresh.ini ANSIBLE_WIRESH_WORKER=False)")
    echo "round $round: ssh ${ssh_t[-1]} s, mitogen ${mitogen_t[-1]} s, wiresh ${wiresh_t[-1]} s, wiresh without worker ${plain_t[-1]} s; load $(cut -d' ' -f1 /proc/loadavg)"
done
ssh_s=$(median "${ssh_t[@]}")
mitogen_s=$(median "${mitogen_t[@]}")
wiresh_s=$(median "${wiresh_t[@]}")
plain_s=$(median "${plain_t[@]}")
echo "ssh (ControlPersist)          ${ssh_s} s"
echo "mitogen (mitogen_linear)      ${mitogen_s} s"
echo "wiresh (worker)               ${wiresh_s} s"
echo "wiresh (no worker)            ${plain_s} s"
echo "ssh / wiresh: $(ratio "$ssh_s" "$wiresh_s")x; mitogen / wiresh: $(ratio "$mitogen_s" "$wiresh_s")x"
echo "SUMMARY hosts=$HOSTS runs=$RUNS ssh_s=$ssh_s mitogen_s=$mitogen_s wiresh_s=$wiresh_s wiresh_no_worker_s=$plain_s ssh_over_wiresh=$(ratio "$ssh_s" "$wiresh_s") mitogen_over_wiresh=$(ratio "$mitogen_s" "$wiresh_s")"
