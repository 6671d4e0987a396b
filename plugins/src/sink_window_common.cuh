/*
 * Shared device helpers: ring-buffer position arithmetic, the visibility rule, the argument fields all kernels
 * share, dtype conversion and warp reductions. Everything here is __host__ __device__ where it can be, so host code
 * and tests use the same rules.
 */
#ifndef LTEXPORT_SINK_WINDOW_COMMON_CUH
#define LTEXPORT_SINK_WINDOW_COMMON_CUH

#include "cuda_compat.h"

#include <math.h>
#include <stdint.h>

#define LT_HD __host__ __device__ __forceinline__

namespace lt
{
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Absolute position held by ring slot `s` once `len` positions (0..len-1) have been written, or -1 if the slot
// has never been written. Sink slots hold their own position; ring slot S + r holds the latest j < len with
// (j - S) mod W == r.
LT_HD int64_t slotPosition(int s, int64_t len, int sink, int window)
{
    if (s < sink)
    {
        return s < len ? s : -1;
    }
    int64_t const r = s - sink;
    int64_t const written = len - sink;
    if (written <= r)
    {
        return -1;
    }
    return sink + r + static_cast<int64_t>(window) * ((written - 1 - r) / window);
}

// Positions written before this call for row b: past_len, a negative one read as 0.
LT_HD int64_t historyLength(int64_t const* pastLen, int b)
{
    return pastLen[b] > 0 ? pastLen[b] : 0;
}

// Ring slots [0, filled) hold keys once `len` positions have been written.
LT_HD int filledSlots(int64_t len, int cacheLen)
{
    return len < cacheLen ? static_cast<int>(len) : cacheLen;
}

LT_HD int slotOf(int64_t pos, int sink, int window)
{
    return pos < sink ? static_cast<int>(pos) : sink + static_cast<int>((pos - sink) % window);
}

// The attention rule of the op: causal, plus (streaming only) sink-or-recent-window.
LT_HD bool visible(int64_t keyPos, int64_t queryPos, int sink, int window, bool dense)
{
    return keyPos >= 0 && keyPos <= queryPos && (dense || keyPos < sink || keyPos > queryPos - window);
}

// One call's tensors and shapes as the kernels read them (each uses a subset), filled once on the host
// (fillKernelArgs). Kernels take it by value (parameter space), so the shared fields cost no memory traffic.
// Pointers first, then 4-byte fields, so that no padding goes in (see the size check after DecodeArgs).
struct KernelArgs
{
    void const* query;
    void const* key;
    void const* value;
    void const* pastKey;
    void const* pastValue;
    int64_t const* pastLen;
    void* output;
    float* partialOut; // decode with splits > 1 (workspace): [B, Hq, splits, D]
    float* partialMl;  //   and [B, Hq, splits, 2] max (log2 domain), sum
    int qHeads;
    int kvHeads;
    int headDim;
    int cacheLen; // S + W
    int sink;
    int window;
    int dense;       // dense mode; decode then also attends the ring entry the new token is about to overwrite
    float scaleLog2; // scale * log2(e): softmax in base 2
};

LT_HD float toFloat(float x)
{
    return x;
}
LT_HD float toFloat(__half x)
{
    return __half2float(x);
}
LT_HD float toFloat(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
LT_HD T fromFloat(float x);
template <>
LT_HD float fromFloat<float>(float x)
{
    return x;
}
template <>
LT_HD __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
LT_HD __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warpSum(float v)
{
#pragma unroll
    for (int mask = kWarpSize / 2; mask > 0; mask >>= 1)
    {
        v += __shfl_xor_sync(kFullMask, v, mask);
    }
    return v;
}

__device__ __forceinline__ float warpMax(float v)
{
#pragma unroll
    for (int mask = kWarpSize / 2; mask > 0; mask >>= 1)
    {
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, mask));
    }
    return v;
}

__host__ __device__ constexpr int log2Exact(int n)
{
    return n <= 1 ? 0 : 1 + log2Exact(n / 2);
}

// Sums N per-lane values over the warp at once (N a power of two <= 32): instead of N full butterflies
// (5N shuffles) each step halves the values a lane carries, so it costs N - 1 + 5 - log2(N) shuffles.
// On return, lane l holds the warp total of value index (l >> (5 - log2 N)).
template <int N>
__device__ __forceinline__ float warpSumMany(float (&v)[N], int lane)
{
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N must be a power of two <= 32");
#pragma unroll
    for (int step = 0; step < log2Exact(N); ++step)
    {
        int const half = N >> (step + 1);
        int const mask = 16 >> step;
        bool const upper = (lane & mask) != 0;
#pragma unroll
        for (int j = 0; j < half; ++j)
        {
            float const send = upper ? v[j] : v[j + half];
            float const keep = upper ? v[j + half] : v[j];
            v[j] = keep + __shfl_xor_sync(kFullMask, send, mask);
        }
    }
#pragma unroll
    for (int mask = 16 >> log2Exact(N); mask > 0; mask >>= 1)
    {
        v[0] += __shfl_xor_sync(kFullMask, v[0], mask);
    }
    return v[0];
}

// Copies `count` contiguous elements global -> shared with all threads of the block; 16-byte vectors when both
// ends allow it (the cache rows of one head are contiguous, so a whole chunk is one copy).
template <typename T>
__device__ __forceinline__ void blockCopy(T* __restrict__ dst, T const* __restrict__ src, int count)
{
    constexpr int kVec = 16 / sizeof(T);
    bool const vec = (reinterpret_cast<uintptr_t>(src) % 16 == 0) && (reinterpret_cast<uintptr_t>(dst) % 16 == 0);
    int done = 0;
    if (vec)
    {
        int const nVec = count / kVec;
        uint4 const* s4 = reinterpret_cast<uint4 const*>(src);
        uint4* d4 = reinterpret_cast<uint4*>(dst);
        for (int i = threadIdx.x; i < nVec; i += blockDim.x)
        {
            d4[i] = s4[i];
        }
        done = nVec * kVec;
    }
    for (int i = done + threadIdx.x; i < count; i += blockDim.x)
    {
        dst[i] = src[i];
    }
}
} // namespace lt

#endif // LTEXPORT_SINK_WINDOW_COMMON_CUH
