#!/usr/bin/env bash
# Install the project and its pinned dependencies into .venv (repo root).
#
# The environment itself may live in a cache outside the clone, keyed by a
# hash of requirements.txt, so that fresh clones on the same machine reuse it;
# .venv is then a link to it. A fresh machine builds it (about 2 minutes).
# Set SED_VENV_CACHE= (empty) to build .venv in place instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CACHE_ROOT=${SED_VENV_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/speechbrain-sed-condmix}
# Test and lint tools, next to the pinned requirements. They are part of the
# cache key, so that changing them builds a new environment.
# tensorboard: the dashboard test reads its event files back; pytest-xdist
# runs the suite on every core.
DEV_PINS=("pytest>=8" "ruff>=0.12" "import-linter==2.17" "tensorboard==2.21.0"
    "pytest-xdist==3.8.0")
KEY=$( (cat requirements.txt; echo "${DEV_PINS[@]}"; "$PYTHON" --version) \
    | sha256sum | cut -c1-16)

quiet() { grep -v "^WARNING: Location" || true; }

build_env() {  # $1: where the environment goes
    rm -rf "$1"
    "$PYTHON" -m venv "$1"
    # pip warns about each missing local index folder; those lines are noise.
    "$1/bin/python" -m pip install -q -r requirements.txt "${DEV_PINS[@]}" \
        2>&1 | quiet
    touch "$1/.complete"   # written last: a half-built env is never reused
}

if [ -n "$CACHE_ROOT" ]; then
    env_dir="$CACHE_ROOT/venv-$KEY"
    if [ ! -f "$env_dir/.complete" ]; then
        echo "Building the environment in $env_dir (first time only)..."
        mkdir -p "$CACHE_ROOT"
        build_env "$env_dir"
    fi
    if [ ! -L .venv ] || [ "$(readlink .venv)" != "$env_dir" ]; then
        rm -rf .venv
        ln -s "$env_dir" .venv
    fi
elif [ ! -f .venv/.complete ]; then
    build_env .venv
fi

# The package itself: editable, without touching the pinned dependencies.
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 \
    | quiet
.venv/bin/python -c "import speechbrain_sed_condmix" \
    || { echo "install failed" >&2; exit 1; }
