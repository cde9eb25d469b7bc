#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (one or many hosts), with the run and the data in a bucket.
#
#   launch/tpu_vm.sh --workdir=gs://BUCKET/runs/utk [--name=faceaging] [--zone=us-west4-a]
#       [--project=PROJECT] [--accelerator=v5litepod-32] [--version=v2-alpha-tpuv5-lite]
#       [--spot | --preemptible] [--queued] [--config=configs/utk.py]
#       [--data_dir=gs://BUCKET/tensorflow_datasets] [--manual_dir=gs://BUCKET/manual]
#       [--dry-run] [--delete] [-- EXTRA FLAGS FOR faceaging.main]
#
# Creates the TPU VM (or a queued resource with --queued) unless it is already up, copies this
# checkout to every worker and installs it with jax[tpu], starts the same training command on
# all workers (--jax_distributed: every host joins one run; the workdir is in the bucket), and
# streams worker 0's log. Ctrl-C stops the streaming only; training goes on. Run it again after
# a preemption: a preempted VM is deleted and created again, and training resumes from the
# newest checkpoint in the workdir. --delete deletes the VM (the bucket is kept).
# --dry-run prints every command instead of running it (with no other argument: the plan for a
# v5litepod-32 slice, 8 hosts x 4 chips, training configs/utk.py).
set -euo pipefail

name=faceaging zone=us-west4-a project="" accelerator=v5litepod-32 version=v2-alpha-tpuv5-lite
pricing="" queued=0 config=configs/utk.py workdir="" data_dir="" manual_dir="" dry_run=0 delete=0
extra=()
while (($#)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) pricing=--spot ;;
    --preemptible) pricing=--preemptible ;;
    --queued) queued=1 ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --data_dir=*) data_dir=${1#*=} ;;
    --manual_dir=*) manual_dir=${1#*=} ;;
    --dry-run) dry_run=1 ;;
    --delete) delete=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
  esac
  shift
done

if [[ -z "$workdir" ]]; then
  if ((dry_run)); then workdir=gs://YOUR_BUCKET/runs/utk; else
    echo "error: --workdir=gs://BUCKET/PATH is required (a TPU VM's disk goes with the VM)" >&2; exit 2
  fi
fi
if [[ "$workdir" != gs://* ]]; then
  echo "error: --workdir=$workdir: expected a gs:// path (every worker must see the same run)" >&2
  exit 2
fi
bucket_root=${workdir#gs://}; bucket_root=gs://${bucket_root%%/*}
data_dir=${data_dir:-$bucket_root/tensorflow_datasets}
manual_dir=${manual_dir:-$bucket_root/manual}

gcloud_args=(--zone="$zone")
[[ -n "$project" ]] && gcloud_args+=(--project="$project")

run() {  # prints the command; runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

state() {  # the VM's state (READY, PREEMPTED, ...), empty if it does not exist or in a dry run
  ((dry_run)) && return 0
  gcloud compute tpus tpu-vm describe "$name" "${gcloud_args[@]}" --format='value(state)' 2>/dev/null || true
}

delete_vm() {
  if ((queued)); then
    run gcloud compute tpus queued-resources delete "$name" "${gcloud_args[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$name" "${gcloud_args[@]}" --quiet
  fi
}

if ((delete)); then delete_vm; exit 0; fi

hosts() {  # hosts of a slice: chips (v4/v5p names count TensorCores, 2 per chip) / 4 per host
  local family=${accelerator%-*} n=${accelerator##*-} chips
  case "$family" in v4|v5p) chips=$((n / 2)) ;; *) chips=$n ;; esac
  if [[ "$family" =~ ^(v5litepod|v5e|v6e)$ ]] && ((chips <= 8)); then echo 1; else
    echo $(( (chips + 3) / 4 )); fi
}
echo "# $accelerator: $(hosts) host(s); each runs one process of the run (--jax_distributed)"

current=$(state)
if [[ "$current" == PREEMPTED || "$current" == TERMINATED ]]; then
  echo "# $name was $current: deleting it and creating it again; training resumes from $workdir"
  delete_vm
  current=""
fi
if [[ -z "$current" ]]; then
  if ((queued)); then
    run gcloud compute tpus queued-resources create "$name" --node-id="$name" "${gcloud_args[@]}" \
      --accelerator-type="$accelerator" --runtime-version="$version" ${pricing:+"$pricing"}
    ((dry_run)) || until [[ "$(state)" == READY ]]; do sleep 30; done
  else
    run gcloud compute tpus tpu-vm create "$name" "${gcloud_args[@]}" \
      --accelerator-type="$accelerator" --version="$version" ${pricing:+"$pricing"}
  fi
fi

ssh_all=(gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all)
repo=$(cd "$(dirname "$0")/.." && pwd)
source_archive=${TMPDIR:-/tmp}/faceaging-src.tgz  # the checkout's files, without .git or venvs
printf '+ git -C %q ls-files -co --exclude-standard | tar -czf %q -C %q -T -\n' \
  "$repo" "$source_archive" "$repo"
((dry_run)) || git -C "$repo" ls-files -co --exclude-standard | tar -czf "$source_archive" -C "$repo" -T -
run gcloud compute tpus tpu-vm scp "$source_archive" "$name:faceaging-src.tgz" "${gcloud_args[@]}" --worker=all
run "${ssh_all[@]}" --command="rm -rf ~/faceaging && mkdir ~/faceaging && tar -xzf ~/faceaging-src.tgz -C ~/faceaging && python3 -m pip install -q -U 'jax[tpu]' -e ~/faceaging"

train=(python3 -m faceaging.main --config="$config" --workdir="$workdir" --jax_distributed
       --config.data.data_dir="$data_dir" --config.data.manual_dir="$manual_dir" "${extra[@]}")
printf -v train_line ' %q' "${train[@]}"
# Every worker runs the same command in the background (the ssh session may end); the log stays
# on each worker in ~/faceaging-train.log. Exit 75 means preempted after a checkpoint.
run "${ssh_all[@]}" --command="cd ~/faceaging && nohup${train_line} > ~/faceaging-train.log 2>&1 &"
run gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=0 \
  --command="tail -n +1 -F ~/faceaging-train.log"
