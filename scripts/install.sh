#!/usr/bin/env bash
# Install everything into .venv in the project root and leave DVC ready to run.
#   bash scripts/install.sh
# Environment knobs:
#   PYTHON=python3.11          interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0" the torch requirement installed first (pip may find a local CPU
#                              wheel through its find-links; on Linux, PyPI's default wheel is the
#                              CUDA build)
#   TORCH_INDEX_URL=...        a PyTorch wheel index to take torch from (a CPU or CUDA variant)
#   INSTALL_BROWSER=1          also install Debian's chromium and Playwright, for the browser
#                              test of the MLflow UI (needs root and apt-get; CI sets it)
#   INSTALL_POSTGRES=0         do not install Debian's postgresql package (by default it is
#                              installed when initdb is missing and apt-get can run: as root or
#                              with password-less sudo); `pipeline server` and its test need it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first, pinned: with it installed, the project's own `torch>=...` requirement pulls nothing.
echo "==> installing $TORCH_SPEC"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${PIP[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" "$TORCH_SPEC"
fi

echo "==> installing the project and its dependencies (editable, with the dev extra)"
"${PIP[@]}" -e ".[dev]"

if [ "${INSTALL_BROWSER:-0}" = "1" ]; then
  echo "==> installing chromium (apt) and playwright (pip) for the MLflow UI browser test"
  if command -v chromium >/dev/null 2>&1 || {
      command -v apt-get >/dev/null 2>&1 &&
      apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    "${PIP[@]}" -e ".[dev,browser]"
  else
    echo "    (could not install chromium: the browser test will be skipped)" >&2
  fi
fi

# PostgreSQL for `pipeline server` (a team's MLflow tracking server) and its test.
have_initdb() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if [ "${INSTALL_POSTGRES:-1}" = "1" ] && ! have_initdb; then
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && "${SUDO[@]}" true 2>/dev/null; then
    echo "==> installing PostgreSQL (apt: postgresql) for pipeline server"
    { "${SUDO[@]}" apt-get update -qq >/dev/null &&
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ||
      echo "    (could not install postgresql: pipeline server and its test need it)" >&2
  else
    echo "    (PostgreSQL is missing and apt-get cannot run here: pipeline server needs it)" >&2
  fi
fi

# DVC needs a Git repository; the project ships .dvc/ so a clone is ready as it is.
if [ ! -d .git ]; then
  git init -q
fi
if [ ! -d .dvc ]; then
  .venv/bin/dvc init -q
fi
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true

echo "==> done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
echo "    run the pipeline with:  make run   (or .venv/bin/dvc repro; no activation needed)"
