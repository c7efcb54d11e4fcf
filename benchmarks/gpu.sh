#!/usr/bin/env bash
# GPU figures of issue 8: training step (a, e) and inference RTF (b, e) on
# CUDA, fp32 and bf16 (training also fp16 with the gradient scaler), at the
# paper's batch compositions, both weight layouts. Budget: < 5 min.
#
#     bash benchmarks/gpu.sh [OUT_DIR]      # default: results/bench_gpu
#
# Each OUT_DIR/*.json holds the JSON object printed by one run. A failed run
# does not stop the others; the script then exits with status 1.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-results/bench_gpu}"
mkdir -p "$OUT"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else
"error: CUDA is not available")' || exit 1
start=$SECONDS
failed=0
run() {  # $1: output name; the rest: the command
    local name=$1
    shift
    echo "== $name" >&2
    "$@" >"$OUT/$name.json" || { failed=1; echo "!! $name failed" >&2; }
    cat "$OUT/$name.json"
}
for dtype in fp32 bf16; do
    run "inference_rtf_$dtype" "$PY" benchmarks/inference_rtf.py \
        --device cuda --dtype "$dtype" --batch-sizes 1 32 --warmup 3 \
        --repeats 10 --optimize none fused
    run "train_step_$dtype" "$PY" benchmarks/train_step.py --device cuda \
        --dtype "$dtype" --systems crnn_mt crnn_condmix atst_sed_base \
        --crnn-batch-sizes 12 12 24 --atst-batch-sizes 24 24 48 48 \
        --layouts nchw channels_last --warmup 3 --repeats 5
done
run train_step_fp16 "$PY" benchmarks/train_step.py --device cuda \
    --dtype fp16 --systems crnn_mt atst_sed_base --crnn-batch-sizes 12 12 24 \
    --atst-batch-sizes 24 24 48 48 --warmup 3 --repeats 5
echo "gpu.sh: done in $((SECONDS - start)) s; JSON in $OUT" >&2
exit "$failed"
