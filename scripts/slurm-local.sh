#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying and testing sweeps (tests/slurm_test.ts):
#   scripts/slurm-local.sh start DIR   write DIR/slurm.conf, start munged (unless running), slurmctld, slurmd
#   scripts/slurm-local.sh stop DIR    stop the daemons this script started, by their pid files
# Everything Slurm keeps (state, spool, logs, pid files) lives under DIR; /etc/slurm is not touched. Use the
# cluster with SLURM_CONF=DIR/slurm.conf in the environment (sbatch, squeue, scancel read it).
# Needs root and Debian's slurm-wlm and munge (scripts/setup.sh installs them); no systemd.
set -euo pipefail
cmd=${1:?usage: slurm-local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-local.sh start|stop DIR}")
conf="$dir/slurm.conf"

fail() { echo "slurm-local: $*" >&2; exit 1; }

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$dir/$d.pid" ]; then
      pid=$(cat "$dir/$d.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$d.pid"
    fi
  done
  if [ -f "$dir/munged.pid" ]; then
    kill "$(cat "$dir/munged.pid")" 2>/dev/null || true
    rm -f "$dir/munged.pid"
  fi
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || fail "unknown command '$cmd' (start or stop)"
[ "$(id -u)" -eq 0 ] || fail "needs root (slurmd runs jobs as their users; SlurmUser=root here)"
for b in munged slurmctld slurmd sbatch; do
  command -v "$b" >/dev/null || fail "$b is not installed: run scripts/setup.sh (Debian's slurm-wlm and munge)"
done
mkdir -p "$dir"/{state,spool,log}

# munge: the package's key; /run/munge owned by the munge user, as munged insists
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -f /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (reinstall munge)"
  install -d -o munge -g munge -m 0755 /run/munge
  su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/munged.pid" \
    || fail "munged did not start (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$dir/munged.pid"
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
cat >"$conf" <<CONF
# written by scripts/slurm-local.sh: one node, this machine
ClusterName=inoculum-local
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
SchedulerType=sched/backfill
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$conf"
stop_daemons_on_error() { stop; fail "$1 (logs in $dir/log)"; }
slurmctld -f "$conf" || stop_daemons_on_error "slurmctld did not start"
slurmd -f "$conf" || stop_daemons_on_error "slurmd did not start"
for _ in $(seq 100); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
  case "$state" in idle|mixed|allocated) echo "slurm-local: node $host $state (SLURM_CONF=$conf)"; exit 0 ;; esac
  sleep 0.2
done
stop_daemons_on_error "the node did not come up (sinfo says '${state:-nothing}')"
