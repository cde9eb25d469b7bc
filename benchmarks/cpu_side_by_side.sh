#!/usr/bin/env bash
# faceaging's seed layer plan beside the PyTorch peer on this machine's CPU, paired in one run:
# float32, 200x200, batch 2, as in issue #12.
#
#   bash benchmarks/cpu_side_by_side.sh [STEPS]
#
# PEER_PYTHON: a python with torch (default: python); PEER: the peer script
# (default ../shared/peers/seed_arch_torch.py). faceaging's timed window holds one lazy-R1
# step and its mean weights it 1 in r1_every (see train_step_speed.py); the peer has no R1.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-3}
PEER=${PEER:-../shared/peers/seed_arch_torch.py}
PEER_PYTHON=${PEER_PYTHON:-python}
echo "== faceaging configs/seed.py, float32, batch 2, $STEPS timed steps"
python benchmarks/train_step_speed.py --config=configs/seed.py --config.train.batch_size=2 \
  --config.dtype=float32 --steps="$STEPS" 2>&1 | grep -v -E "^(W|I)[0-9]{4} "
echo "== PyTorch peer, fp32, batch 2, $STEPS steps"
"$PEER_PYTHON" "$PEER" --device cpu --batch 2 --steps "$STEPS" --variants fp32
