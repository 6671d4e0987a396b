/*
 * The few runtime calls the kernels make, behind one seam: real CUDA, or (LT_CPU_EMULATION, tests only) the
 * CPU emulation in plugins/tests/cpu_emulation.h that lets the kernel logic run on machines without a GPU.
 */
#ifndef LTEXPORT_CUDA_COMPAT_H
#define LTEXPORT_CUDA_COMPAT_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#ifdef LT_CPU_EMULATION
#include "cpu_emulation.h"
#else

// A kernel is launched through a plain name or function pointer (template arguments would split the macro).
#define LT_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define LT_DYNAMIC_SMEM(type, name) extern __shared__ type name[]

namespace lt
{
inline cudaError_t memcpyDeviceAsync(void* dst, void const* src, size_t bytes, cudaStream_t stream)
{
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}

inline cudaError_t lastLaunchError()
{
    return cudaGetLastError();
}

template <typename Kernel>
inline cudaError_t allowDynamicSmem(Kernel kernel, int bytes)
{
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
} // namespace lt

#endif // LT_CPU_EMULATION
#endif // LTEXPORT_CUDA_COMPAT_H
