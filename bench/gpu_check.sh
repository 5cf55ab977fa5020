#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, then the GPU rows of docs/performance.md, each step with its own time
# limit, each result written to $OUT as soon as it exists (a cut-off run still leaves the first results).
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh          # on a CUDA machine whose python3 has torch, triton, lightning
#   OUT=/tmp/gpu CINET_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh   # dry run on a CPU (tiny sizes)
#
# Runs from the source tree (PYTHONPATH=src) with the machine's own python3 and torch: nothing is installed, so
# torch is never downloaded again. Order (most important first): tests, attention bench, training step,
# full-resolution Cityscapes step, torch.compile; the limits add up to 8 minutes.
set -u
OUT=${OUT:-/tmp/cinet-gpu}
DEVICE=${CINET_GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
CINET="$PY -m cinet.cli"
. "$(dirname "$0")/steps.sh"  # log, step

if [ "$DEVICE" = cpu ]; then
    TINY=--tiny
    ATT_SIZES=2x300x32x16
    CITY="--height 64 --width 128 --batch-size 2"
    STEP="--batch-size 1 --height 32 --width 40"
else
    TINY=
    ATT_SIZES=8x4800x512x64,2x8192x512x64,1x32768x512x64
    CITY="--height 1024 --width 2048 --batch-size 2"
    STEP="--batch-size 8"
fi

{ nvidia-smi || true; $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"; $PY -c "import triton; print('triton', triton.__version__)" || true; } >"$OUT/env.log" 2>&1

# 1. the CUDA tests, then the compile checks (slow marker) of the attention ops
step tests_gpu 120 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_ops_attention.py
step tests_slow_attention 60 $PY -m pytest -q -p no:cacheprovider -m slow tests/test_ops_attention.py

# 2. attention: naive vs tiled vs triton, fp32 and bf16, peak memory and time in one run
step bench_attention 90 $CINET bench attention --device "$DEVICE" $TINY --sizes "$ATT_SIZES" \
    --dtypes float32,bfloat16 --repeat 10 --warmup 3 --out "$OUT/attention.json"

# 3. training step, ResNet-101 480x640 (the paper's), fp32 vs bf16 + channels-last, with a profile
step bench_train_step 60 $CINET bench train-step --device "$DEVICE" $TINY $STEP \
    --modes fp32,bf16_channels_last --repeat 5 --warmup 2 --profile 15 --out "$OUT/train_step.json"

# 4. full-resolution Cityscapes (N = 32768 at 1/8), batch 2: memory-efficient path (auto) and naive
step bench_cityscapes 45 $CINET bench train-step --device "$DEVICE" $TINY $CITY --num-classes 19 \
    --modes bf16_channels_last --repeat 3 --warmup 1 --out "$OUT/cityscapes_auto.json"
step bench_cityscapes_naive 30 $CINET bench train-step --device "$DEVICE" $TINY $CITY --num-classes 19 \
    --attention-impl naive --modes bf16_channels_last --repeat 2 --warmup 1 --out "$OUT/cityscapes_naive.json"

# 5. torch.compile row (last: compilation time is the least predictable)
step bench_compile 75 $CINET bench train-step --device "$DEVICE" $TINY $STEP \
    --modes bf16_channels_last --compile --repeat 5 --warmup 2 --out "$OUT/train_step_compile.json"
log done
cat "$OUT/steps.log"; tail -n 3 "$OUT"/tests_*.log
