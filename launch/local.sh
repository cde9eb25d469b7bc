#!/usr/bin/env bash
# Train locally (CPU or GPUs): launch/local.sh WORKDIR [CONFIG] [extra flags...]
# Re-running with the same WORKDIR resumes from its latest checkpoint.
set -euo pipefail
workdir=${1:?usage: launch/local.sh WORKDIR [CONFIG] [flags...]}
config=${2:-configs/utk.py}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."
exec python -m faceaging.main --config="$config" --workdir="$workdir" "$@"
