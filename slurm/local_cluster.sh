#!/usr/bin/env bash
# dream-bench: a single-node Slurm on localhost (Debian bookworm, root, no systemd) for tests/slurm and CI.
# Adapted from the probe script in the spec (ENVIRONMENT.md §5); state under $SLURM_LOCAL_STATE.
# Usage: source slurm-local.sh && start    |  bash slurm-local.sh start|stop|status
# Measured on the 2-core probe box: apt install ~11 s, start 1-3 s (15 s if a stale DRAIN must be cleared), srun hostname ~0.1 s,
# submitit submit()->result() ~1 s, map_array/batch of 3-4 tasks ~6 s.
# Needs: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurmctld slurmd munge slurm-client
set -u
SLURM_LOCAL_STATE=${SLURM_LOCAL_STATE:-/var/spool/slurm-local}
SLURM_LOCAL_CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
SLURM_LOCAL_MEM=${SLURM_LOCAL_MEM:-20000}
SLURM_LOCAL_FAKE_GPUS=${SLURM_LOCAL_FAKE_GPUS:-0}   # placeholder-file gpu GRES so gpus_per_node=N / --gpus requests are accepted (no real device; CUDA_VISIBLE_DEVICES stays unset)

_write_conf() {
  mkdir -p /etc/slurm "$SLURM_LOCAL_STATE/slurmd" "$SLURM_LOCAL_STATE/slurmctld" /var/log/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
GresTypes=gpu
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=$SLURM_LOCAL_STATE/slurmctld.pid
SlurmdPidFile=$SLURM_LOCAL_STATE/slurmd.pid
SlurmdSpoolDir=$SLURM_LOCAL_STATE/slurmd
StateSaveLocation=$SLURM_LOCAL_STATE/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$SLURM_LOCAL_CPUS RealMemory=$SLURM_LOCAL_MEM $( [ "$SLURM_LOCAL_FAKE_GPUS" -gt 0 ] && echo Gres=gpu:$SLURM_LOCAL_FAKE_GPUS ) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  # slurmd rejects count-only gpu GRES ("gres/gpu count reported lower than configured (0 < N)"): point it at placeholder files
  if [ "$SLURM_LOCAL_FAKE_GPUS" -gt 0 ]; then
    local n=$((SLURM_LOCAL_FAKE_GPUS-1)); for i in $(seq 0 $n); do touch "$SLURM_LOCAL_STATE/fakegpu$i"; done
    echo "NodeName=localhost Name=gpu File=$SLURM_LOCAL_STATE/fakegpu[0-$n]" > /etc/slurm/gres.conf
  else
    : > /etc/slurm/gres.conf
  fi
}

start() {
  local t0=$(date +%s.%N)
  [ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! munge -n >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged || return 1; fi
  _write_conf
  /usr/sbin/slurmctld || return 1          # daemonizes; pid in $SLURM_LOCAL_STATE/slurmctld.pid
  /usr/sbin/slurmd -N localhost || return 1 # -N: node name != hostname
  sleep 1; scontrol update NodeName=localhost State=RESUME 2>/dev/null  # clear a DRAIN left in saved state by an earlier config
  for _ in $(seq 1 30); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 0.5
  done
  sinfo
  echo "slurm-local started in $(awk "BEGIN{print $(date +%s.%N) - $t0}") s"
}

stop() {
  scancel --user=root 2>/dev/null || true
  # slurm daemons first (their shutdown may still talk to munge), then munged; SIGKILL what a SIGTERM left alive
  local f pids
  pids=""; for f in "$SLURM_LOCAL_STATE/slurmd.pid" "$SLURM_LOCAL_STATE/slurmctld.pid"; do
    [ -s "$f" ] && pids="$pids $(cat "$f")"; done
  _kill_wait $pids
  [ -s /run/munge/munged.pid ] && _kill_wait "$(cat /run/munge/munged.pid)"
  echo "slurm-local stopped"
}

_kill_wait() {
  local p alive i
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null
  for i in $(seq 1 40); do
    alive=""; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && return 0; sleep 0.25
  done
  kill -9 $alive 2>/dev/null; return 0
}

status() { sinfo; squeue; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then "${1:-status}"; fi
