#!/usr/bin/env bash
# The speed suite for one GPU (H100/H200), in under 8 minutes, printing one table:
#   faceaging configs/seed.py train step (bf16, batch 32) beside the PyTorch peer
#   (bf16 + channels_last + torch.compile, same card, same call), configs/utk.py train step,
#   aging throughput with MFU, and the input pipeline's images/s.
#
#   bash benchmarks/device_suite.sh [OUTDIR]
#
# Needs jax (with CUDA), flax, optax, orbax-checkpoint, torch, and faceaging's other
# requirements. Wheels for the ones a bare image lacks can sit in .whl/ (see
# benchmarks/README.md); they are installed into a private folder first. PEER points at the
# peer script (default ../shared/peers/seed_arch_torch.py, or .peer/ when carried along).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-/tmp/faceaging-device-suite}}
mkdir -p "$OUTDIR"
SUITE="$OUTDIR/suite.jsonl"
: > "$SUITE"
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/faceaging-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/faceaging-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
PEER=${PEER:-../shared/peers/seed_arch_torch.py}
[ -f "$PEER" ] || PEER=.peer/seed_arch_torch.py
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())"

run() {  # run SECONDS COMMAND...: one part; a failure or time-out is reported and the suite goes on
  local limit=$1; shift
  echo "== $*"
  timeout "$limit" "$@" 2>&1 | grep -v -E "^(W|I)[0-9]{4} |Warning|warn\(" || echo "!! failed or timed out: $*"
}

run 200 python3 benchmarks/train_step_speed.py --config=configs/seed.py --config.train.batch_size=32 \
  --config.dtype=bfloat16 --json="$SUITE" --label=seed
run 240 python3 "$PEER" --batch 32 --steps 20 --variants bf16-cl-compile | tee "$OUTDIR/peer.txt"
run 150 python3 benchmarks/train_step_speed.py --config=configs/utk.py --json="$SUITE" --label=utk
run 90 python3 benchmarks/predict_throughput.py --config=configs/seed.py --batch_size=32 \
  --dtype=bfloat16 --batches=10 --json="$SUITE"
run 90 python3 benchmarks/input_speed.py --config=configs/seed.py --workers=0,4,8 --batches=40 \
  --consume="$SUITE" --json="$SUITE"
python3 benchmarks/device_table.py "$SUITE" "$OUTDIR/peer.txt" | tee "$OUTDIR/table.md"
