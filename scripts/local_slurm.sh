#!/usr/bin/env bash
# A single-node Slurm on this machine (Debian's slurm-wlm + munge), for testing the submitit
# executor against a real scheduler: `bash scripts/local_slurm.sh start|stop|status`.
# Needs root (or sudo) once to install and to run slurmd; state lives under $DFKD_SLURM_DIR.
set -euo pipefail
DIR="${DFKD_SLURM_DIR:-/tmp/dfkd-slurm}"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
NODE="$(hostname -s)"

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$DIR"/{state,spool,log}
  # munge: a key and a running daemon (slurm authenticates every request with it)
  if ! pgrep -x munged >/dev/null; then
    $SUDO mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    [ -s /etc/munge/munge.key ] || $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    id munge >/dev/null 2>&1 && $SUDO chown -R munge: /etc/munge /var/lib/munge /var/log/munge /run/munge
    $SUDO chmod 400 /etc/munge/munge.key
    if ! id munge >/dev/null 2>&1; then $SUDO /usr/sbin/munged --force
    elif [ -z "$SUDO" ]; then runuser -u munge -- /usr/sbin/munged
    else sudo -u munge /usr/sbin/munged; fi
  fi
  CPUS="$(nproc)"; MEM="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))"
  cat > "$DIR/slurm.conf" <<EOF
ClusterName=dfkd
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  $SUDO mkdir -p /etc/slurm
  $SUDO cp "$DIR/slurm.conf" /etc/slurm/slurm.conf   # where sbatch/squeue/sinfo look
  pgrep -x slurmctld >/dev/null || $SUDO /usr/sbin/slurmctld -c -f /etc/slurm/slurm.conf
  pgrep -x slurmd >/dev/null || $SUDO /usr/sbin/slurmd -f /etc/slurm/slurm.conf
  for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -Eq "idle|mix|alloc"; then sinfo; return 0; fi
    sleep 1
  done
  echo "slurm did not come up; logs in $DIR/log" >&2
  tail -5 "$DIR"/log/*.log >&2 || true
  return 1
}

stop() {
  $SUDO pkill -x slurmd || true
  $SUDO pkill -x slurmctld || true
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
