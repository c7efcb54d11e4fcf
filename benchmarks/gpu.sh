#!/usr/bin/env bash
# GPU figures of issue 8: training step (a, e) and inference RTF (b, e) on
# CUDA, fp32 and bf16, at the paper's batch compositions. Budget: < 5 min.
#
#     bash benchmarks/gpu.sh [OUT_DIR]      # default: results/bench_gpu
#
# Each line of OUT_DIR/*.json is the JSON object printed by one run; the
# Python scripts exit with an error at once when CUDA is not available.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
OUT="${1:-results/bench_gpu}"
mkdir -p "$OUT"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else
"error: CUDA is not available")'
start=$SECONDS
for dtype in fp32 bf16; do
    echo "== inference_rtf $dtype" >&2
    "$PY" benchmarks/inference_rtf.py --device cuda --dtype "$dtype" \
        --batch-sizes 1 32 --warmup 3 --repeats 20 --optimize none fused \
        | tee "$OUT/inference_rtf_$dtype.json"
    echo "== train_step $dtype" >&2
    "$PY" benchmarks/train_step.py --device cuda --dtype "$dtype" \
        --crnn-batch-sizes 12 12 24 --atst-batch-sizes 24 24 48 48 \
        --warmup 3 --repeats 10 \
        | tee "$OUT/train_step_$dtype.json"
done
echo "gpu.sh: done in $((SECONDS - start)) s; JSON in $OUT" >&2
