#!/usr/bin/env bash
# Your own data, end to end, on a generated example in the generic format:
# 3 classes with their own names (bark, chime, tap_water), 5 s clips at
# 22.05 kHz, strong labels + (stereo) unlabeled audio. The audio is
# generated, synthetic: its numbers say nothing about real recordings.
#
#   bash tools/custom_example.sh [OUTPUT_FOLDER]     (default results/custom_example)
#
# Steps: generate the data, train custom_crnn.yaml (a narrower CRNN, 390
# steps, settings as in the mini-DESED demo, to fit a couple of minutes),
# print the test metrics per class, export the model, run sed-detect.
# Uses .venv/bin/python if present (tools/install.sh makes it), else python;
# set PYTHON to choose another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/custom_example}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

echo "== 1/4 generate the example data (synthetic) in $OUT/data"
"$PYTHON" -c "import sys
from speechbrain_sed_condmix.dataio.synth import generate_custom_example
generate_custom_example(sys.argv[1], scale='small', seed=0)" "$OUT/data"

echo "== 2/4 train recipes/Custom/SED/hparams/custom_crnn.yaml"
"$PYTHON" recipes/Custom/SED/train.py recipes/Custom/SED/hparams/custom_crnn.yaml \
    --data_folder="$OUT/data" --output_folder="$OUT/crnn" \
    --number_of_epochs=15 --valid_every_n_epochs=5 --rampup_epochs=3 \
    --batch_sizes=[6,6] --cnn_filters=[8,16,32,32,32,32,32] --rnn_hidden=64 \
    --dropout=0.0 --lr=0.003 --ema_decay=0.99 \
    --num_workers=0 --n_event_rolls=2 --device=cpu --noprogressbar

echo "== 3/4 test metrics per class (teacher, median filter)"
"$PYTHON" - "$OUT/crnn/metrics.json" <<'PY'
import json, sys

from speechbrain_sed_condmix.reporting import format_table

print(format_table(json.load(open(sys.argv[1]))["teacher"]))
PY

echo "== 4/4 export, then detect the events of two test clips"
"$PYTHON" -c "import sys
from speechbrain_sed_condmix.cli import export_main
sys.exit(export_main(sys.argv[1:]))" "$OUT/crnn" --out "$OUT/exported" --force
"$PYTHON" -c "import sys
from speechbrain_sed_condmix.cli import detect_main
sys.exit(detect_main(sys.argv[1:]))" \
    "$OUT/data/test/audio/test_0000.wav" "$OUT/data/test/audio/test_0001.wav" \
    --model "$OUT/exported" --out "$OUT/events.tsv"
echo "Ground truth of those clips:"
grep -E "^test_000[01]\.wav" "$OUT/data/test/strong.tsv"
