#!/usr/bin/env bash
# GPU figures of issues 8 and 18: training step (with the model FLOP
# utilisation of ATST-SED), a profile of the step, inference RTF and data
# loading against what the step consumes, on CUDA, at the paper's batch
# compositions. Budget: about 6 min on an H200.
#
#     bash benchmarks/gpu.sh [OUT_DIR]          # default: results/bench_gpu
#     bash benchmarks/gpu.sh --cpu-check [OUT]  # every command on the CPU,
#                                               # tiny batches: checks the
#                                               # script, not the GPU
#
# Each OUT_DIR/*.json holds the JSON object printed by one run. A failed run
# does not stop the others; the script then exits with status 1.
# PEAK_TFLOPS (default 989, an H200's dense bf16 peak) turns the bf16 FLOP
# counts into a utilisation.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
CHECK=0
if [ "${1:-}" = "--cpu-check" ]; then
    CHECK=1
    shift
fi
OUT="${1:-results/bench_gpu}"
mkdir -p "$OUT"
if [ "$CHECK" = 1 ]; then
    DEV=cpu CRNN="1 1 2" ATST="1 1 1 1" STEPS="--warmup 0 --repeats 1"
    RTF_BATCH="1 2" WORKERS="0 1" SYSTEMS="crnn_mt atst_sed_tiny"
    RTF="--models crnn atst_sed_tiny --warmup 0 --repeats 1"
else
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available()
else "error: CUDA is not available (--cpu-check runs the commands on CPU)")' \
        || exit 1
    DEV=cuda CRNN="12 12 24" ATST="24 24 48 48" STEPS="--warmup 3 --repeats 5"
    RTF_BATCH="1 32" WORKERS="0 4 8" SYSTEMS="crnn_mt atst_sed_base"
    RTF="--models crnn atst_sed_base --warmup 3 --repeats 10"
fi
PEAK="${PEAK_TFLOPS:-989}"
start=$SECONDS
failed=0
run() {  # $1: output name; the rest: the command
    local name=$1
    shift
    echo "== $name" >&2
    "$@" >"$OUT/$name.json" || { failed=1; echo "!! $name failed" >&2; }
    cat "$OUT/$name.json"
}
# shellcheck disable=SC2086  # the size lists are meant to split
for dtype in fp32 bf16; do
    run "inference_rtf_$dtype" "$PY" benchmarks/inference_rtf.py \
        --device "$DEV" --dtype "$dtype" --batch-sizes $RTF_BATCH $RTF \
        --optimize none fused
    peak=()
    [ "$dtype" = bf16 ] && peak=(--peak-tflops "$PEAK")
    run "train_step_$dtype" "$PY" benchmarks/train_step.py --device "$DEV" \
        --dtype "$dtype" --systems $SYSTEMS crnn_condmix \
        --crnn-batch-sizes $CRNN --atst-batch-sizes $ATST \
        --layouts nchw channels_last $STEPS --count-flops "${peak[@]}"
done
if [ "$CHECK" = 0 ]; then  # SpeechBrain runs fp16 only on CUDA
    # shellcheck disable=SC2086
    run train_step_fp16 "$PY" benchmarks/train_step.py --device "$DEV" \
        --dtype fp16 --systems $SYSTEMS --crnn-batch-sizes $CRNN \
        --atst-batch-sizes $ATST $STEPS
fi
for system in $SYSTEMS; do
    # shellcheck disable=SC2086
    run "profile_step_${system}_bf16" "$PY" benchmarks/profile_step.py \
        --device "$DEV" --dtype bf16 --system "$system" \
        --crnn-batch-sizes $CRNN --atst-batch-sizes $ATST --steps 3
done
# Clips/s the loader gives with N workers, to set against the clips/s the
# training steps above consume (samples_per_s in train_step_*.json).
# shellcheck disable=SC2086
run data_loading "$PY" benchmarks/data_loading.py --workers $WORKERS \
    --epochs "$([ "$CHECK" = 1 ] && echo 1 || echo 20)"
echo "gpu.sh: done in $((SECONDS - start)) s; JSON in $OUT" >&2
exit "$failed"
