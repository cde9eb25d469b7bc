#!/usr/bin/env bash
# Train on a SLURM GPU cluster: one process per node, every GPU of the node in it.
#
#   launch/slurm.sh --workdir=DIR [--nodes=2] [--gpus_per_node=8] [--cpus_per_task=16]
#       [--time=24:00:00] [--partition=P] [--account=A] [--config=configs/utk.py]
#       [--data_dir=DIR] [--manual_dir=DIR] [--venv=PATH] [--dry-run] [-- EXTRA FLAGS]
#
# Submits (sbatch) a job whose srun starts `python -m faceaging.main ... --jax_distributed` on
# every node; jax.distributed reads the coordinator, process count and index from SLURM's
# variables. DIR must be a shared filesystem or a gs:// bucket, as must the data. On a stop
# (time limit, preemption: SLURM sends SIGTERM first, see --signal) the trainer saves a
# checkpoint and exits 75; the job then requeues itself and resumes from that checkpoint.
# --dry-run prints the sbatch command and the job script instead of submitting (with no other
# argument: 2 nodes x 8 GPUs training configs/utk.py into ./runs/utk).
set -euo pipefail

nodes=2 gpus=8 cpus=16 time_limit=24:00:00 partition="" account="" config=configs/utk.py
workdir="" data_dir="" manual_dir="" venv="" dry_run=0 extra=()
while (($#)); do
  case "$1" in
    --nodes=*) nodes=${1#*=} ;;
    --gpus_per_node=*) gpus=${1#*=} ;;
    --cpus_per_task=*) cpus=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --data_dir=*) data_dir=${1#*=} ;;
    --manual_dir=*) manual_dir=${1#*=} ;;
    --venv=*) venv=${1#*=} ;;
    --dry-run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$workdir" ]]; then
  if ((dry_run)); then workdir=runs/utk; else
    echo "error: --workdir=DIR is required (on a filesystem every node shares, or gs://)" >&2; exit 2
  fi
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ "$workdir" == gs://* || "$workdir" == /* ]] || workdir=$PWD/$workdir

train=(python -m faceaging.main --config="$config" --workdir="$workdir" --jax_distributed)
[[ -n "$data_dir" ]] && train+=(--config.data.data_dir="$data_dir")
[[ -n "$manual_dir" ]] && train+=(--config.data.manual_dir="$manual_dir")
train+=("${extra[@]}")
printf -v train_line ' %q' "${train[@]}"

script=$(cat <<EOF
#!/usr/bin/env bash
#SBATCH --job-name=faceaging
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus
#SBATCH --cpus-per-task=$cpus
#SBATCH --time=$time_limit
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=faceaging-%j.log
${partition:+#SBATCH --partition=$partition}
${account:+#SBATCH --account=$account}
set -uo pipefail
cd $(printf %q "$repo")
${venv:+source $(printf %q "$venv")/bin/activate}
# One process per node, its $gpus GPUs local devices; jax.distributed finds the rest in SLURM_*.
srun --kill-on-bad-exit=1${train_line}
code=\$?
if [[ \$code == 75 ]]; then  # stopped after saving a checkpoint: run again from it
  scontrol requeue "\$SLURM_JOB_ID"
fi
exit \$code
EOF
)
echo "# $nodes node(s) x $gpus GPU(s): $nodes process(es) of one run (--jax_distributed)"
echo "+ sbatch <<'SCRIPT'"
echo "$script" | grep -v '^$'
echo "SCRIPT"
((dry_run)) || echo "$script" | grep -v '^$' | sbatch
