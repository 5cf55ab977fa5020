#!/usr/bin/env bash
# The CPU rows of docs/performance.md (issue #27) on the machine at hand, one command: what `auto` picks here, the
# demo config's training step fp32 vs bf16, `make demo` fp32 vs auto end to end, eager vs onnxruntime vs INT8
# inference, and (with torchao installed) PyTorch's own x86 INT8 path. Each step has its own time limit and writes
# its result to $OUT as soon as it exists; a summary with the ratios is printed at the end (and in summary.json).
#
#   OUT=/tmp/cpu bash bench/cpu_check.sh             # after `make install`; ~25 min on 2 cores (less with AMX)
#   OUT=/tmp/cpu QUICK=1 bash bench/cpu_check.sh     # a dry run of every step at tiny sizes (~3 min)
#
# Run it on an idle machine (the ratios hold under load, the seconds do not) and name the CPU with every figure:
# env.log holds lscpu's model name and matrix-unit flags (amx_bf16, amx_int8, avx512_bf16, avx512_vnni).
set -u
OUT=${OUT:-/tmp/cinet-cpu}
PY=${PYTHON:-.venv/bin/python}
QUICK=${QUICK:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
CINET="$PY -m cinet.cli"
. "$(dirname "$0")/steps.sh"  # log, step

if [ -n "$QUICK" ]; then
    STEP="--tiny --repeat 2 --warmup 1"
    INFER="--tiny --repeat 2 --warmup 1 --num-calib 2"
    DEMO="data.length=16 data.eval_length=8 train.stages.0.epochs=1 train.stages.1.epochs=1 train.stages.2.epochs=1"
    PT2E="--num-calib 2 --num-eval 2 --sizes 64x80 --repeat 2"
else
    STEP="--config demo --repeat 5 --warmup 2"
    INFER="--encoder resnet50 --height 240 --width 320 --channels 256 --repeat 10 --warmup 3"
    DEMO=
    PT2E="--sizes 240x320 --repeat 10"
fi

{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket|family|^Model:"; echo -n "matrix-unit flags: ";
  lscpu | grep -o -w -E "amx_bf16|amx_int8|amx_tile|avx512_bf16|avx512_vnni|avx512f" | sort -u | tr '\n' ' '; echo;
  $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'threads', torch.get_num_threads())";
  $PY -c "from cinet.utils.precision import resolve_precision; print(resolve_precision('auto', 'cpu'))";
} >"$OUT/env.log" 2>&1

# 1. the training step of the demo config: fp32, bf16, bf16 + channels-last (achieved FLOP/s and peak fractions)
step train_step 600 $CINET bench train-step --device cpu $STEP \
    --modes fp32,bf16,bf16_channels_last --out "$OUT/train_step.json"

# 2. inference: eager fp32 / bf16, onnxruntime fp32 / INT8 in turn
step inference 600 $CINET bench inference --device cpu $INFER \
    --modes eager,bf16,onnxruntime,int8 --out "$OUT/inference.json"

# 3. make demo end to end, float32 then auto (what a first-time user runs); demo.json holds time_s per phase
step demo_fp32 1200 make demo DEMO_DIR="$OUT/demo_fp32" DEMO_ARGS="trainer.precision=32 $DEMO"
step demo_auto 1200 make demo DEMO_DIR="$OUT/demo_auto" DEMO_ARGS="$DEMO"

# 4. PyTorch's x86 INT8 (PT2E + Inductor) vs onnxruntime INT8 on the demo checkpoint (needs torchao, a compiler)
if $PY -c "import torchao" 2>/dev/null && [ -f "$OUT/demo_auto/last.ckpt" ]; then
    step export_int8 300 $CINET export --checkpoint "$OUT/demo_auto/last.ckpt" --onnx "$OUT/demo.onnx" \
        --quantize int8
    step int8_pt2e 900 $PY bench/int8_pt2e.py --checkpoint "$OUT/demo_auto/last.ckpt" --onnx "$OUT/demo.onnx" \
        --onnx-int8 "$OUT/demo.int8.onnx" $PT2E
else
    log "skip int8_pt2e (pip install torchao; and the demo checkpoint)"
fi

# summary: the ratios the issue asks for, from the JSON files above
$PY - "$OUT" <<'EOF' | tee "$OUT/summary.json"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
s = {"env": (out / "env.log").read_text().strip().splitlines() if (out / "env.log").is_file() else None}
ts = load("train_step.json")
if ts:
    rows = {r["mode"]: r for r in ts.get("rows", []) if "step_s" in r}
    s["train_step_s"] = {m: r["step_s"] for m, r in rows.items()}
    s["train_step_fraction_of_peak"] = {m: r.get("fraction_of_peak") for m, r in rows.items()}
    if "fp32" in rows:
        s["train_step_speedup_over_fp32"] = {m: rows["fp32"]["step_s"] / r["step_s"] for m, r in rows.items()}
inf = load("inference.json")
if inf:
    s["inference"] = {k: v for k, v in inf.items() if k.startswith("speedup")}
    s["inference_step_s"] = {r.get("runtime", str(i)): r.get("step_s") for i, r in enumerate(inf.get("rows", []))}
for name in ("demo_fp32", "demo_auto"):
    d = load(f"{name}/demo.json")
    if d:
        s[name] = {"wall_s": d.get("wall_s"), "time_s": d.get("time_s"), "test": d.get("model"),
                   "precision": load(f"{name}/precision.json")}
if "demo_fp32" in s and "demo_auto" in s:
    s["demo_auto_speedup_over_fp32"] = s["demo_fp32"]["wall_s"] / s["demo_auto"]["wall_s"]
    s["demo_auto_minus_fp32"] = {k: v - s["demo_fp32"]["test"][k] for k, v in s["demo_auto"]["test"].items()}
log = out / "int8_pt2e.log"
if log.is_file():
    text = log.read_text()
    start = text.find("{")
    try:
        s["int8_pt2e"] = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        s["int8_pt2e"] = text[-2000:]
print(json.dumps(s, indent=1, default=str))
EOF
log done
