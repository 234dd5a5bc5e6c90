#!/usr/bin/env bash
# Creates .venv with the tested versions (.ci/constraints.txt) and installs clipsam (editable) with every extra (ray and
# serve included, for their tests), and Debian's chromium for the web page test.
# Idempotent: re-running with unchanged pins and pyproject does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The web page test (tests/serve/test_page.py) drives Debian's chromium through Playwright (never `playwright install`).
# Installed when running as root with apt and missing; without it that one test is skipped, saying why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } ||
    echo "setup: could not install chromium (apt-get); the browser test will be skipped" >&2
fi
stamp=$(cat .ci/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f .venv/.clipsam-stamp ] && [ "$(cat .venv/.clipsam-stamp)" = "$stamp" ]; then
  exit 0
fi
"$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q -c .ci/constraints.txt)
# torch first from the pinned version; sam2 is source-only and must build against that torch.
"${pip[@]}" torch torchvision
SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation sam2
"${pip[@]}" -e '.[all,test,ray,serve]'
echo "$stamp" > .venv/.clipsam-stamp
