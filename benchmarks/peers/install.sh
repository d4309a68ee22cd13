#!/usr/bin/env bash
# Install the peers that benchmarks/train_peers.py measures the training step against, each in its
# own venv outside the repository (nothing of the project's .venv changes):
#   bash benchmarks/peers/install.sh      # -> ${SEQ2SEQ_PEERS:-~/.cache/seq2seq-peers}/opennmt
# OpenNMT-py 3.5.1 is installed with --no-deps beside the project's torch build (its metadata asks
# for torch<2.3, its RNN code runs on 2.13), plus only what `import onmt` and its trainer import.
# Idempotent: a venv whose stamp matches the wanted versions and that imports the trainer is kept.
# fairseq is not installed: benchmarks/README.md says why.
# Environment knobs:
#   SEQ2SEQ_PEERS=DIR          where the peers' venvs go (train_peers.py reads the same variable)
#   PYTHON=python3.11          interpreter for the venv (default: the one behind the project's
#                              .venv, so the wheels match; else python3)
#   TORCH_SPEC="torch==X"      the torch requirement (default: the project .venv's torch version,
#                              else torch==2.13.0; pip may find a local CPU wheel through its
#                              find-links; on Linux, PyPI's default wheel is the CUDA build)
#   TORCH_INDEX_URL=...        a PyTorch wheel index to take torch from (as scripts/install.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PEERS=${SEQ2SEQ_PEERS:-$HOME/.cache/seq2seq-peers}
VENV=$PEERS/opennmt
ONMT=opennmt-py==3.5.1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(.venv/bin/python -c 'import sys; print(sys._base_executable)' 2>/dev/null || true)
  [ -x "$PYTHON" ] || PYTHON=python3
fi
if [ -z "${TORCH_SPEC:-}" ]; then
  version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' \
    2>/dev/null || true)
  TORCH_SPEC=torch==${version%%+*}
  [ "$TORCH_SPEC" != "torch==" ] || TORCH_SPEC=torch==2.13.0
fi
# What `import onmt` and onmt.trainer import (found by importing them in a bare venv): the
# tokenizer binding, option parsing and config, the scorers (sacrebleu) and the data-transform
# plugins that onmt.transforms imports eagerly (spacy, fasttext, ahocorasick, rapidfuzz, regex),
# although RNN training uses none of them. Left out: ctranslate2 (an optional import), tensorboard
# (only with -tensorboard), flask and waitress (the translation server).
DEPS=(
  "pyonmttok>=1.37,<2" configargparse pyyaml six numpy sacrebleu
  spacy fasttext-wheel pyahocorasick rapidfuzz regex
)
STAMP="$ONMT $TORCH_SPEC ${DEPS[*]}"
CHECK='import onmt, onmt.trainer, onmt.model_builder, torch; print("OpenNMT-py", onmt.__version__, "torch", torch.__version__)'

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.seq2seq-peer" 2>/dev/null)" = "$STAMP" ] \
  && "$VENV/bin/python" -W ignore -c "$CHECK" >/dev/null 2>&1; then
  echo "==> $VENV is up to date: $("$VENV/bin/python" -W ignore -c "$CHECK" 2>/dev/null)"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $("$PYTHON" --version)"
  mkdir -p "$PEERS"
  "$PYTHON" -m venv "$VENV"
fi
rm -f "$VENV/.seq2seq-peer"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "==> installing $TORCH_SPEC"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${PIP[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" "$TORCH_SPEC"
fi
echo "==> installing $ONMT (--no-deps) and its runtime imports"
"${PIP[@]}" --no-deps "$ONMT"
# Binary wheels only: nothing is compiled; the pin keeps pip from touching torch. pip then lists
# what opennmt-py's metadata asks for and this venv lacks on purpose: those lines are dropped.
if ! out=$("${PIP[@]}" --only-binary=:all: "${DEPS[@]}" "$TORCH_SPEC" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "$out" | grep -v "opennmt-py 3.5.1 requires\|dependency resolver does not" || true
info=$("$VENV/bin/python" -W ignore -c "$CHECK")
echo "$STAMP" >"$VENV/.seq2seq-peer"
echo "==> done: $info in $VENV; benchmarks/train_peers.py compares against it"
