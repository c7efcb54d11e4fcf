#!/usr/bin/env bash
# Quick start (1): install, then generate mini-DESED, prepare it, train the
# CRNN + Mean Teacher recipe on it, print untrained vs trained metrics, then
# export the model and detect the events of one clip with sed-detect.
# mini-DESED is generated, synthetic audio: its numbers are not DESED numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
exec .venv/bin/python tools/demo.py "$@"
