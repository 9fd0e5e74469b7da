#!/usr/bin/env bash
# Install what the SLURM tests need: slurm-wlm (slurmctld, slurmd, client tools) and munge.
# Idempotent: does nothing when the binaries are already there. Debian/Ubuntu, as root.
# It only installs; tests/slurm/cluster.sh starts and stops the one-node cluster.
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin" # the daemons live in sbin, which a non-login PATH may lack
need=(slurmctld slurmd sinfo sbatch srun squeue scontrol munged munge)

missing() {
    local b
    for b in "${need[@]}"; do
        command -v "$b" >/dev/null 2>&1 || return 0
    done
    return 1
}

if ! missing; then
    echo "provision_slurm: slurm-wlm and munge already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "provision_slurm: slurm-wlm/munge missing and not root: run as root (apt-get install slurm-wlm munge)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "provision_slurm: apt-get not found; install slurm-wlm and munge with this system's package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "provision_slurm: installing slurm-wlm and munge with apt-get"
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null

if missing; then
    echo "provision_slurm: installed slurm-wlm and munge, but some of ${need[*]} are still missing" >&2
    exit 1
fi
echo "provision_slurm: done ($(slurmd -V 2>/dev/null || echo 'slurmd version unknown'))"
