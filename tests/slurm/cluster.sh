#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests: munged + slurmctld + slurmd, as root,
# without systemd.
#
#   tests/slurm/cluster.sh start  [STATE_DIR]   start it (idempotent) and wait until the node is idle
#   tests/slurm/cluster.sh status [STATE_DIR]   show daemons and sinfo; exit 0 only if all run
#   tests/slurm/cluster.sh stop   [STATE_DIR]   cancel jobs, stop the daemons it started
#   tests/slurm/cluster.sh env    [STATE_DIR]   print `export SLURM_CONF=...`
#
# STATE_DIR (or $LIPSIM_SLURM_DIR; default /var/tmp/lipsim-slurm) holds everything: the munge
# key and socket, slurm.conf, state, spool, pid and log files. Needs slurm-wlm and munge
# (.ci/provision_slurm.sh installs them).
#
# Settings (environment):
#   LIPSIM_SLURM_TIMEOUT      seconds to wait for the node to be idle (default 90)
#   LIPSIM_SLURMCTLD_PORT     slurmctld port (default 6817)
#   LIPSIM_SLURMD_PORT        slurmd port (default 6818)
#   LIPSIM_SLURM_HEADROOM_MB  memory kept out of RealMemory (default max(1024, 10% of RAM))
#
# Exit status: 0 ok, 1 error, 2 usage, 3 (start) another test cluster from another STATE_DIR is
# running on this machine (one cluster per machine: fixed ports and /etc/slurm/slurm.conf).
#
# /etc/slurm/slurm.conf: snakemake's slurm-jobstep executor strips every SLURM_* variable,
# SLURM_CONF included, before it calls srun inside a job, so srun must find the configuration
# at the compiled-in path. start therefore links /etc/slurm/slurm.conf to STATE_DIR/slurm.conf
# (only when that path is free or already such a link) and stop removes the link.
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/slurm.conf.in"
MARKER="# One-node SLURM cluster for lipsim-repro's tests"
SYSTEM_CONF=/etc/slurm/slurm.conf
EXIT_BUSY=3 # start: another test cluster (other STATE_DIR) is running on this machine

usage() {
    echo "usage: $0 start|stop|status|env [STATE_DIR]" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
cmd="$1"
STATE_DIR="${2:-${LIPSIM_SLURM_DIR:-/var/tmp/lipsim-slurm}}"
STATE_DIR="$(mkdir -p "$STATE_DIR" && cd "$STATE_DIR" && pwd)"
CONF="$STATE_DIR/slurm.conf"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MUNGE_PID="$MUNGE_DIR/munged.pid"
CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"
LOG_DIR="$STATE_DIR/log"
TIMEOUT="${LIPSIM_SLURM_TIMEOUT:-90}"
export SLURM_CONF="$CONF"

die() {
    echo "cluster.sh: error: $*" >&2
    exit 1
}
say() { echo "cluster.sh: $*"; }

# pid from a pid file if that process is alive and is the named program; empty otherwise.
live_pid() {
    local pidfile="$1" name="$2" pid comm
    [[ -s "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 0
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$name" ]] && echo "$pid"
    return 0
}

show_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$MUNGE_DIR/munged.log"; do
        [[ -f "$f" ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2 || true
    done
}

fail_start() {
    echo "cluster.sh: error: $*" >&2
    echo "----- sinfo -----" >&2
    sinfo -N -l >&2 2>&1 || true
    show_logs
    exit 1
}

check_binaries() {
    local b missing=()
    for b in munged munge unmunge slurmctld slurmd sinfo scontrol squeue scancel; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]}: install slurm-wlm and munge (as root: .ci/provision_slurm.sh)"
    fi
    [[ $(id -u) -eq 0 ]] || die "must run as root (SlurmUser=root, munged, /etc/slurm/slurm.conf)"
    [[ -f "$TEMPLATE" ]] || die "template $TEMPLATE not found"
}

mem_mb() {
    local total_kb total_mb headroom
    total_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    total_mb=$((total_kb / 1024))
    headroom="${LIPSIM_SLURM_HEADROOM_MB:-$((total_mb / 10 > 1024 ? total_mb / 10 : 1024))}"
    ((total_mb > headroom + 512)) || die "only ${total_mb} MB of memory; need more than $((headroom + 512))"
    echo $((total_mb - headroom))
}

start_munge() {
    if [[ -n "$(live_pid "$MUNGE_PID" munged)" ]]; then
        say "munged already running (pid $(live_pid "$MUNGE_PID" munged))"
        return
    fi
    mkdir -p "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR"
    local key="$MUNGE_DIR/munge.key"
    if [[ ! -s "$key" ]]; then
        (umask 077 && dd if=/dev/urandom of="$key" bs=1024 count=1 status=none)
    fi
    if id munge >/dev/null 2>&1; then chown munge:munge "$key"; fi
    chmod 0400 "$key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force --key-file="$key" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" ||
        fail_start "munged did not start"
    local i
    for ((i = 0; i < 50; i++)); do
        if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            say "munged running (pid $(live_pid "$MUNGE_PID" munged))"
            return
        fi
        sleep 0.2
    done
    fail_start "munged started but 'munge -n | unmunge' fails on $MUNGE_SOCKET"
}

write_conf() {
    local host cpus mem
    host="$(hostname -s)"
    # nproc obeys OMP_NUM_THREADS (set by test runners): count the usable CPUs without it
    cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
    mem="$(mem_mb)"
    mkdir -p "$STATE_DIR"/{ctld,spool,run,log}
    sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" \
        -e "s|@CTLD_PORT@|${LIPSIM_SLURMCTLD_PORT:-6817}|g" \
        -e "s|@SLURMD_PORT@|${LIPSIM_SLURMD_PORT:-6818}|g" \
        "$TEMPLATE" >"$CONF.tmp"
    grep -q "$MARKER" "$CONF.tmp" || die "template $TEMPLATE lacks the marker line '$MARKER'"
    mv "$CONF.tmp" "$CONF"
    say "slurm.conf: $CONF (node $host, CPUs=$cpus, RealMemory=$mem MB)"
}

# Fails unless /etc/slurm/slurm.conf is free, ours, or a stale link of a stopped test cluster.
check_system_conf() {
    if [[ -L "$SYSTEM_CONF" ]]; then
        local target
        target="$(readlink "$SYSTEM_CONF")"
        if [[ "$target" != "$CONF" ]]; then
            local other_dir
            other_dir="$(dirname "$target")"
            if [[ -n "$(live_pid "$other_dir/run/slurmctld.pid" slurmctld)" ]]; then
                echo "cluster.sh: error: $SYSTEM_CONF points to another running test cluster" \
                    "($target); stop it first: $0 stop $other_dir" >&2
                exit "$EXIT_BUSY"
            fi
        fi
    elif [[ -e "$SYSTEM_CONF" ]]; then
        grep -q "$MARKER" "$SYSTEM_CONF" 2>/dev/null ||
            die "$SYSTEM_CONF exists and is not a test cluster's: this machine has a real SLURM setup; not touching it"
    fi
}

link_system_conf() {
    check_system_conf
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$CONF" "$SYSTEM_CONF"
}

unlink_system_conf() {
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

node_state() {
    sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state="" resumed=0
    while ((SECONDS < deadline)); do
        state="$(node_state)"
        case "$state" in
        idle | mixed | allocated | completing)
            say "node $(hostname -s) is $state (SLURM_CONF=$CONF)"
            return
            ;;
        down* | drain* | fail*)
            if ((!resumed)); then
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
        esac
        [[ -n "$(live_pid "$CTLD_PID" slurmctld)" ]] || fail_start "slurmctld exited"
        [[ -n "$(live_pid "$SLURMD_PID" slurmd)" ]] || fail_start "slurmd exited"
        sleep 0.5
    done
    fail_start "node not idle after ${TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
}

do_start() {
    check_binaries
    check_system_conf
    start_munge
    if [[ -n "$(live_pid "$CTLD_PID" slurmctld)" && -n "$(live_pid "$SLURMD_PID" slurmd)" ]]; then
        say "slurmctld and slurmd already running from $STATE_DIR"
        link_system_conf
        wait_idle
        return
    fi
    write_conf
    link_system_conf
    if [[ -z "$(live_pid "$CTLD_PID" slurmctld)" ]]; then
        # -c: start with a clean job/node state (a test cluster carries nothing over)
        slurmctld -c -f "$CONF" || fail_start "slurmctld did not start"
    fi
    if [[ -z "$(live_pid "$SLURMD_PID" slurmd)" ]]; then
        slurmd -c -f "$CONF" || fail_start "slurmd did not start"
    fi
    wait_idle
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {
    local pidfile="$1" name="$2" pid i
    pid="$(live_pid "$pidfile" "$name")"
    if [[ -z "$pid" ]]; then
        rm -f "$pidfile"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
        echo "cluster.sh: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
    say "stopped $name (pid $pid)"
}

do_stop() {
    if [[ -n "$(live_pid "$CTLD_PID" slurmctld)" ]]; then
        local jobs i
        jobs="$(squeue -h -o '%i' 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            # shellcheck disable=SC2086 # one id per word
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 40; i++)); do
                [[ -z "$(squeue -h -t PD,R,CG,CF,S -o '%i' 2>/dev/null || true)" ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$MUNGE_PID" munged
    unlink_system_conf
    local left
    left="$(grep -lx slurmstepd /proc/[0-9]*/comm 2>/dev/null | cut -d/ -f3 | tr '\n' ' ' || true)"
    [[ -z "$left" ]] || echo "cluster.sh: warning: slurmstepd processes still running: $left" >&2
}

do_status() {
    local rc=0 name pidfile pid
    for name in munged slurmctld slurmd; do
        case "$name" in
        munged) pidfile="$MUNGE_PID" ;;
        slurmctld) pidfile="$CTLD_PID" ;;
        slurmd) pidfile="$SLURMD_PID" ;;
        esac
        pid="$(live_pid "$pidfile" "$name")"
        if [[ -n "$pid" ]]; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    echo "state dir: $STATE_DIR"
    if ((rc == 0)); then
        sinfo -N -l || rc=1
        squeue || true
    fi
    return "$rc"
}

case "$cmd" in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*) usage ;;
esac
