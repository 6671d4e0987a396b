/*
 * TEST ONLY. Runs the CUDA kernels of sink_window_kernels.cu on CPU threads so that their indexing, masking,
 * ring-buffer and online-softmax logic can be checked against a reference on machines without a GPU.
 *
 * Model: one std::thread per CUDA thread of a block, blocks run one after another (so `static` stands in for
 * __shared__), __syncthreads is a block barrier, __syncwarp/shuffles use a per-warp barrier and an exchange
 * buffer. It assumes every lane of a warp takes part in each shuffle (true for these kernels) and models neither
 * timing, memory coalescing, bank conflicts nor implicit warp-synchronous execution. Passing here is evidence
 * about the algorithm, not about behaviour on a GPU.
 *
 * Included through src/cuda_compat.h when LT_CPU_EMULATION is defined; compile the .cu as C++20 with g++.
 */
#ifndef LTEXPORT_CPU_EMULATION_H
#define LTEXPORT_CPU_EMULATION_H

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h> // types only (dim3, cudaError_t, cudaStream_t); nothing from libcudart is called

namespace lt_emu
{
struct BlockContext
{
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> exchange;    // one slot per thread, for shuffles
    std::vector<float4> dynamicShared; // extern __shared__
    unsigned threadsPerBlock{0};
};

inline BlockContext* gContext = nullptr; // one launch at a time
inline dim3 gGridDim;
inline dim3 gBlockDim;
inline thread_local dim3 tBlockIdx;
inline thread_local dim3 tThreadIdx;

inline unsigned linearThread()
{
    return tThreadIdx.x + gBlockDim.x * (tThreadIdx.y + gBlockDim.y * tThreadIdx.z);
}

inline void syncBlock()
{
    gContext->block->arrive_and_wait();
}

inline void syncWarp()
{
    gContext->warps[linearThread() / 32]->arrive_and_wait();
}

template <typename T>
inline T exchange(T value, unsigned srcLaneOf(unsigned lane, int arg), int arg)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    unsigned const tid = linearThread();
    unsigned const warp = tid / 32;
    unsigned const lane = tid % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    gContext->exchange[tid] = bits;
    gContext->warps[warp]->arrive_and_wait();
    uint64_t const got = gContext->exchange[warp * 32 + (srcLaneOf(lane, arg) & 31u)];
    gContext->warps[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

inline unsigned xorLane(unsigned lane, int mask)
{
    return lane ^ static_cast<unsigned>(mask);
}

inline unsigned fixedLane(unsigned, int src)
{
    return static_cast<unsigned>(src);
}

inline void launch(dim3 grid, dim3 block, size_t dynamicSmemBytes, std::function<void()> const& body)
{
    BlockContext ctx;
    ctx.threadsPerBlock = block.x * block.y * block.z;
    if (ctx.threadsPerBlock == 0 || ctx.threadsPerBlock % 32 != 0)
    {
        std::fprintf(stderr, "cpu_emulation: block size must be a positive multiple of 32\n");
        std::abort();
    }
    ctx.block = std::make_unique<std::barrier<>>(ctx.threadsPerBlock);
    for (unsigned w = 0; w < ctx.threadsPerBlock / 32; ++w)
    {
        ctx.warps.push_back(std::make_unique<std::barrier<>>(32));
    }
    ctx.exchange.assign(ctx.threadsPerBlock, 0);
    ctx.dynamicShared.assign((dynamicSmemBytes + sizeof(float4) - 1) / sizeof(float4) + 1, float4{0, 0, 0, 0});
    gContext = &ctx;
    gGridDim = grid;
    gBlockDim = block;

    std::vector<std::thread> threads;
    threads.reserve(ctx.threadsPerBlock);
    for (unsigned tid = 0; tid < ctx.threadsPerBlock; ++tid)
    {
        threads.emplace_back(
            [&, tid]
            {
                tThreadIdx = dim3(tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y));
                for (unsigned z = 0; z < grid.z; ++z)
                    for (unsigned y = 0; y < grid.y; ++y)
                        for (unsigned x = 0; x < grid.x; ++x)
                        {
                            tBlockIdx = dim3(x, y, z);
                            body();
                            ctx.block->arrive_and_wait(); // the next block reuses the `static` shared memory
                        }
            });
    }
    for (auto& t : threads)
    {
        t.join();
    }
    gContext = nullptr;
}
} // namespace lt_emu

using std::max; // device code calls the CUDA built-ins min/max
using std::min;

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx (lt_emu::tThreadIdx)
#define blockIdx (lt_emu::tBlockIdx)
#define blockDim (lt_emu::gBlockDim)
#define gridDim (lt_emu::gGridDim)

inline void __syncthreads()
{
    lt_emu::syncBlock();
}

inline void __syncwarp(unsigned = 0xffffffffu)
{
    lt_emu::syncWarp();
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T value, int laneMask, int = 32)
{
    return lt_emu::exchange(value, lt_emu::xorLane, laneMask);
}

template <typename T>
inline T __shfl_sync(unsigned, T value, int srcLane, int = 32)
{
    return lt_emu::exchange(value, lt_emu::fixedLane, srcLane);
}

#define LT_LAUNCH(kernel, grid, block, smem, stream, ...)                                                             \
    lt_emu::launch((grid), (block), (smem), [&] {                                                          \
        (void) (stream);                                                                                               \
        kernel(__VA_ARGS__);                                                                                           \
    })
#define LT_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(lt_emu::gContext->dynamicShared.data())

namespace lt
{
inline cudaError_t memcpyDeviceAsync(void* dst, void const* src, size_t bytes, cudaStream_t)
{
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

inline cudaError_t lastLaunchError()
{
    return cudaSuccess;
}

template <typename Kernel>
inline cudaError_t allowDynamicSmem(Kernel, int)
{
    return cudaSuccess;
}
} // namespace lt

#endif // LTEXPORT_CPU_EMULATION_H
