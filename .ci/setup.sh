#!/usr/bin/env bash
# Creates .venv with the tested versions (.ci/constraints.txt) and installs clipsam (editable) with every extra (ray included, for its tests).
# Idempotent: re-running with unchanged pins and pyproject does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=$(cat .ci/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f .venv/.clipsam-stamp ] && [ "$(cat .venv/.clipsam-stamp)" = "$stamp" ]; then
  exit 0
fi
"$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q -c .ci/constraints.txt)
# torch first from the pinned version; sam2 is source-only and must build against that torch.
"${pip[@]}" torch torchvision
SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation sam2
"${pip[@]}" -e '.[all,test,ray]'
echo "$stamp" > .venv/.clipsam-stamp
