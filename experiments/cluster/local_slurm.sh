#!/usr/bin/env bash
# A one-host SLURM cluster on this machine, for trying the sbatch template and for the test suite.
#   eval "$(experiments/cluster/local_slurm.sh start /tmp/slurm)"   # prints: export SLURM_CONF=...
#   experiments/cluster/local_slurm.sh stop /tmp/slurm
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge). Nodes: this host, all
# its CPUs, partition "debug"; jobs may be requeued.
set -euo pipefail
action=${1:?usage: local_slurm.sh start|stop <state dir>}
S=$(mkdir -p "${2:?usage: local_slurm.sh start|stop <state dir>}" && cd "$2" && pwd)

if [[ $action == stop ]]; then
  for file in "$S/slurmd.pid" "$S/slurmctld.pid"; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done  # ports free again
  done
  exit 0
fi

command -v slurmctld >/dev/null || { echo "slurmctld not found: apt-get install slurm-wlm munge" >&2; exit 1; }
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [[ -f /etc/munge/munge.key ]] || mungekey -c -f
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
fi
H=$(hostname -s)
MEM=$(( $(free -m | awk '/Mem:/{print $2}') - 2000 ))
mkdir -p "$S/state" "$S/spool" "$S/log"
cat > "$S/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
ReturnToService=2
MpiDefault=none
KillWait=30
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$S/slurm.conf
slurmctld
slurmd
for _ in $(seq 1 60); do  # the node is idle about a second after the daemons start
  sinfo -h -o %t 2>/dev/null | grep -qx idle && { echo "export SLURM_CONF=$S/slurm.conf"; exit 0; }
  sleep 0.5
done
echo "the SLURM node did not become idle; see $S/log" >&2
exit 1
