#!/usr/bin/env bash
# Build plugins/build/libltexport_trt_plugin.so (kernels + IPluginV3 glue) for TensorRT for RTX, from registry
# packages only: TensorRT 10.14's public headers come from the kernel-lens wheel in the venv (used at build time,
# never copied into the repository); no TensorRT library is linked. Needs nvcc and CMake.
#
#   plugins/build_trt_rtx.sh                         # SM80 code + PTX (the driver JITs it for SM86/89/120)
#   CUDA_ARCHS="86;89;120" plugins/build_trt_rtx.sh  # native code for those GPUs instead
#
# Env: PYTHON (default .venv/bin/python), CUDA_ARCHS (default 80), BUILD_DIR (default plugins/build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$root/.venv/bin/python}"
build="${BUILD_DIR:-$root/plugins/build}"
include="$("$PYTHON" "$root/plugins/trt_headers.py")"
start=$SECONDS
cmake -S "$root/plugins" -B "$build" -DLTEXPORT_TENSORRT_RTX=ON -DTensorRT_INCLUDE_DIR="$include" \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target ltexport_trt_plugin -j "$(nproc)"
echo "built $build/libltexport_trt_plugin.so for TensorRT-RTX (CUDA archs ${CUDA_ARCHS:-80}) in $((SECONDS - start)) s"
