#!/usr/bin/env bash
# Compile checks for the TensorRT plugin; no GPU and no TensorRT install needed.
#
#   plugins/ci_check.sh                                   # kernels: nvcc -c for sm_80 and sm_90 (warnings are errors)
#   TENSORRT_INCLUDE_DIR=/path/to/TensorRT/include plugins/ci_check.sh
#                                                         # + the IPluginV3 glue against those headers, a link of the
#                                                         #   loadLibrary variant (exports checked, creator loaded),
#                                                         #   and the host glue test on the CPU-emulated kernels
#
# Env: NVCC (default nvcc), CXX (default g++, C++20 for the emulation), LTEXPORT_CI_ARCHS (default "80 90"),
#      LTEXPORT_CI_SKIP_HOST_TESTS=1 to stop after the compile checks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/src"
tests="$here/tests"
NVCC="${NVCC:-nvcc}"
CXX="${CXX:-g++}"
archs="${LTEXPORT_CI_ARCHS:-80 90}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
die() { printf 'ci_check: FAILED: %s\n' "$*" >&2; exit 1; }

command -v "$NVCC" >/dev/null || die "nvcc not found (set NVCC=/path/to/nvcc)"
# nvcc knows where its headers are; the host-compiled parts need the same ones.
cuda_inc="$("$NVCC" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/.*INCLUDES="-I\([^"]*\)".*/\1/p' | head -n1)"
[ -f "$cuda_inc/cuda_fp16.h" ] || die "cannot locate the CUDA headers next to $NVCC"
cuda_lib="$(cd "$cuda_inc/../lib" 2>/dev/null && pwd || true)"
"$NVCC" --version | tail -n1

step "kernels: nvcc -c for sm_${archs// /, sm_} (in parallel)"
declare -A pids
start=$SECONDS
for a in $archs; do
    "$NVCC" -std=c++17 -O3 -c -Xcompiler -fPIC -Xcompiler -Wall,-Wextra -Werror all-warnings \
        "-gencode=arch=compute_${a},code=sm_${a}" "$src/sink_window_kernels.cu" -o "$work/kernels_sm${a}.o" \
        >"$work/nvcc_sm${a}.log" 2>&1 &
    pids[$a]=$!
done
for a in $archs; do
    if wait "${pids[$a]}"; then
        echo "sm_${a}: ok"
    else
        cat "$work/nvcc_sm${a}.log" >&2
        die "nvcc failed for sm_${a}"
    fi
done
echo "kernels compiled in $((SECONDS - start)) s"

step "kernels: host C++ compile of the CPU emulation build (keeps tests/cpu_emulation.h in sync)"
"$CXX" -std=c++20 -fsyntax-only -Wall -Wextra -Werror -Wno-unknown-pragmas -DLT_CPU_EMULATION -x c++ \
    -I"$src" -I"$tests" -isystem "$cuda_inc" "$src/sink_window_kernels.cu"
echo ok

if [ -z "${TENSORRT_INCLUDE_DIR:-}" ]; then
    printf '\nci_check: OK (kernels only; set TENSORRT_INCLUDE_DIR to also check the plugin glue)\n'
    exit 0
fi
[ -f "$TENSORRT_INCLUDE_DIR/NvInferRuntime.h" ] || die "no NvInferRuntime.h in TENSORRT_INCLUDE_DIR=$TENSORRT_INCLUDE_DIR"
trt_version="$(sed -n 's/^#define \(TRT\|NV_TENSORRT\)_\(MAJOR\|MINOR\|PATCH\)\(_ENTERPRISE\)\? *\([0-9]\+\).*/\4/p' \
    "$TENSORRT_INCLUDE_DIR/NvInferVersion.h" | head -n3 | paste -sd.)"
trt_flags=(-std=c++17 -Wall -Wextra -Wpedantic -Werror -fPIC -fvisibility=hidden -I"$src"
    -isystem "$TENSORRT_INCLUDE_DIR" -isystem "$cuda_inc")

step "plugin glue: g++ against TensorRT $trt_version headers ($TENSORRT_INCLUDE_DIR)"
for f in sink_window_plugin sink_window_fields; do
    "$CXX" "${trt_flags[@]}" -c "$src/$f.cpp" -o "$work/$f.o"
done
for static in 0 1; do
    "$CXX" "${trt_flags[@]}" -DLTEXPORT_STATIC_REGISTRATION=$static -c "$src/sink_window_registration.cpp" \
        -o "$work/registration_$static.o"
done
"$CXX" "${trt_flags[@]}" -DLTEXPORT_STATIC_REGISTRATION=0 -DLTEXPORT_TENSORRT_RTX=1 \
    -c "$src/sink_window_registration.cpp" -o "$work/registration_rtx.o"
echo "ok (static-registration, loadLibrary and TensorRT-RTX variants)"

if [ "${LTEXPORT_CI_SKIP_HOST_TESTS:-0}" = 1 ]; then
    printf '\nci_check: OK (kernels + glue compile checks)\n'
    exit 0
fi

step "loadLibrary variant: link (no libnvinfer needed), check exports, load it and create a plugin"
first_arch="${archs%% *}"
"$CXX" -shared -o "$work/libltexport_trt_plugin_dynamic.so" "$work/registration_0.o" "$work/sink_window_plugin.o" \
    "$work/sink_window_fields.o" "$work/kernels_sm${first_arch}.o" -L"$cuda_lib" -lcudart -Wl,-rpath,"$cuda_lib"
exports="$(nm -D --defined-only "$work/libltexport_trt_plugin_dynamic.so" | awk '{print $3}')"
for sym in getCreators setLoggerFinder; do
    grep -qx "$sym" <<<"$exports" || die "$sym is not exported"
done
"$CXX" -std=c++17 -Wall -Wextra -Werror -isystem "$TENSORRT_INCLUDE_DIR" -isystem "$cuda_inc" \
    "$tests/plugin_load_test.cpp" -o "$work/plugin_load_test" -ldl
"$work/plugin_load_test" "$work/libltexport_trt_plugin_dynamic.so"

step "host glue test: plugin entry points + enqueue on the CPU-emulated kernels"
"$CXX" -std=c++20 -O1 -Wall -Wextra -Werror -Wno-unknown-pragmas -DLT_CPU_EMULATION -I"$src" -I"$tests" \
    -isystem "$TENSORRT_INCLUDE_DIR" -isystem "$cuda_inc" "$tests/plugin_glue_test.cpp" "$src/sink_window_plugin.cpp" \
    "$src/sink_window_fields.cpp" -x c++ "$src/sink_window_kernels.cu" -x none -pthread \
    -L"$cuda_lib" -lcudart -Wl,-rpath,"$cuda_lib" -o "$work/plugin_glue_test"
"$work/plugin_glue_test"

printf '\nci_check: OK (kernels sm_%s; glue against TensorRT %s headers; host tests passed)\n' "${archs// /, sm_}" \
    "$trt_version"
