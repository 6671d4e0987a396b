/*
 * Prefill (T > 1): flash-attention-style tiles on CUDA cores, fp32 accumulation. One block per
 * (16 queries, query head, batch row); the key axis is "valid ring slots, then the new tokens" and is walked in
 * tiles of 32 staged in shared memory. Scores put one lane on one key (row stride padded so lanes hit distinct
 * banks), P @ V puts lanes on head dims. In streaming mode tiles no query of the block can see are skipped, so a
 * long prompt costs O(T * (S + W)) instead of O(T^2).
 *
 * No tensor cores: this favours one simple kernel for three dtypes and any head_dim <= 256 over peak speed
 * (see benchmarks/kernel_bench.py for the comparison with PyTorch SDPA).
 */
#ifndef LTEXPORT_SINK_WINDOW_PREFILL_CUH
#define LTEXPORT_SINK_WINDOW_PREFILL_CUH

#include "sink_window_common.cuh"

namespace lt
{
constexpr int kPrefillWarps = 4;
constexpr int kPrefillThreads = kPrefillWarps * kWarpSize;
constexpr int kPrefillRows = 16;               // queries per block
constexpr int kPrefillKeys = kWarpSize;        // keys per tile: one per lane
constexpr int kRowsPerWarp = kPrefillRows / kPrefillWarps;

struct PrefillArgs : KernelArgs
{
    int seqLen;
    int keyStride; // padded row stride (elements) of the staged keys
};

// Key rows in shared memory are read by 32 lanes at the same column: an odd number of 32-bit words per row puts
// them in 32 different banks.
template <typename T>
inline int conflictFreeStride(int headDim)
{
    if (sizeof(T) == 4)
    {
        return headDim % 2 == 0 ? headDim + 1 : headDim;
    }
    int stride = (headDim + 1) / 2 * 2;
    return (stride / 2) % 2 == 0 ? stride + 2 : stride;
}

template <typename T>
inline size_t prefillSmemBytes(int headDim)
{
    return sizeof(float) * kPrefillRows * headDim          // scaled queries
        + sizeof(int64_t) * kPrefillKeys                    // key positions
        + sizeof(float) * kPrefillWarps * kPrefillKeys      // probabilities, per warp
        + sizeof(T) * kPrefillKeys * conflictFreeStride<T>(headDim) // keys
        + sizeof(T) * kPrefillKeys * headDim;               // values
}

// Streaming only: can any query row in [t0, ...] of the block see a key of virtual range [lo, hi)?
// Virtual keys: [0, filled) ring slots, then new token t' at filled + t'.
LT_HD bool streamingTileNeeded(int lo, int hi, int filled, int64_t len, int t0, int sink, int window)
{
    if (lo < filled)
    {
        // Sink slots are always visible; ring entries (positions < len) drop out of every window once t0 >= W - 1.
        if (lo < sink || t0 < window - 1)
        {
            return true;
        }
    }
    int const nLo = (lo > filled ? lo : filled) - filled;
    int const nHi = hi - filled;
    if (nLo < nHi)
    {
        if (len + nLo < sink)
        {
            return true;
        }
        // Row t sees t' in (t - W, t]; the earliest row t0 has the earliest window.
        if (nHi - 1 > t0 - window)
        {
            return true;
        }
    }
    return false;
}

template <typename T, int NDL>
__global__ void __launch_bounds__(kPrefillThreads) prefillKernel(PrefillArgs a)
{
    LT_DYNAMIC_SMEM(float4, smem);
    int const D = a.headDim;
    float* qs = reinterpret_cast<float*>(smem);
    int64_t* keyPos = reinterpret_cast<int64_t*>(qs + kPrefillRows * D);
    float* ps = reinterpret_cast<float*>(keyPos + kPrefillKeys);
    T* ks = reinterpret_cast<T*>(ps + kPrefillWarps * kPrefillKeys);
    T* vs = ks + kPrefillKeys * a.keyStride;

    int const t0 = blockIdx.x * kPrefillRows;
    int const h = blockIdx.y;
    int const b = blockIdx.z;
    int const warp = threadIdx.x / kWarpSize;
    int const lane = threadIdx.x % kWarpSize;
    int const T_ = a.seqLen;
    int const C = a.cacheLen;
    int const G = a.qHeads / a.kvHeads;
    int const hkv = h / G;
    bool const dense = a.dense != 0;

    int64_t const len = historyLength(a.pastLen, b);
    int const filled = filledSlots(len, C);
    int const tLast = min(T_, t0 + kPrefillRows) - 1;
    int const total = filled + tLast + 1; // causal: no key after the block's last query

    size_t const kvRow = static_cast<size_t>(b) * a.kvHeads + hkv;
    size_t const qRow = static_cast<size_t>(b) * a.qHeads + h;
    T const* pastK = static_cast<T const*>(a.pastKey) + kvRow * C * D;
    T const* pastV = static_cast<T const*>(a.pastValue) + kvRow * C * D;
    T const* newK = static_cast<T const*>(a.key) + kvRow * T_ * D;
    T const* newV = static_cast<T const*>(a.value) + kvRow * T_ * D;
    T const* query = static_cast<T const*>(a.query) + qRow * T_ * D;

    for (int idx = threadIdx.x; idx < kPrefillRows * D; idx += blockDim.x)
    {
        int const t = t0 + idx / D;
        qs[idx] = t < T_ ? toFloat(query[static_cast<size_t>(t) * D + idx % D]) * a.scaleLog2 : 0.f;
    }

    float m[kRowsPerWarp];
    float l[kRowsPerWarp];
    float acc[kRowsPerWarp][NDL];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
    {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int i = 0; i < NDL; ++i)
            acc[r][i] = 0.f;
    }

    for (int kt = 0; kt < total; kt += kPrefillKeys)
    {
        int const kEnd = min(total, kt + kPrefillKeys);
        if (!dense && !streamingTileNeeded(kt, kEnd, filled, len, t0, a.sink, a.window))
        {
            continue; // block-uniform
        }
        __syncthreads(); // previous tile consumed, queries staged
        for (int idx = threadIdx.x; idx < kPrefillKeys * D; idx += blockDim.x)
        {
            int const kk = idx / D;
            int const d = idx % D;
            int const vk = kt + kk;
            T kx = fromFloat<T>(0.f);
            T vx = kx;
            if (vk < kEnd)
            {
                size_t const off = vk < filled ? static_cast<size_t>(vk) * D + d : static_cast<size_t>(vk - filled) * D + d;
                kx = vk < filled ? pastK[off] : newK[off];
                vx = vk < filled ? pastV[off] : newV[off];
            }
            ks[kk * a.keyStride + d] = kx;
            vs[kk * D + d] = vx;
        }
        if (threadIdx.x < kPrefillKeys)
        {
            int const vk = kt + threadIdx.x;
            keyPos[threadIdx.x] = vk >= kEnd ? -1
                : vk < filled                ? slotPosition(vk, len, a.sink, a.window)
                                             : len + (vk - filled);
        }
        __syncthreads();

        int64_t const kp = keyPos[lane];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r)
        {
            int const row = warp * kRowsPerWarp + r;
            int const t = t0 + row;
            if (t >= T_)
            {
                continue; // warp-uniform
            }
            bool const vis = visible(kp, len + t, a.sink, a.window, dense);
            float s = -INFINITY;
            if (vis)
            {
                float dot = 0.f;
                float const* qr = qs + row * D;
                T const* kr = ks + lane * a.keyStride;
                for (int d = 0; d < D; ++d)
                {
                    dot += qr[d] * toFloat(kr[d]);
                }
                s = dot;
            }
            float const mNew = fmaxf(m[r], warpMax(s));
            if (mNew == -INFINITY)
            {
                continue; // nothing visible to this row yet (warp-uniform)
            }
            float const alpha = exp2f(m[r] - mNew);
            float const p = vis ? exp2f(s - mNew) : 0.f;
            l[r] = l[r] * alpha + warpSum(p);
            m[r] = mNew;
            ps[warp * kPrefillKeys + lane] = p;
            __syncwarp();
#pragma unroll
            for (int i = 0; i < NDL; ++i)
            {
                acc[r][i] *= alpha;
            }
            for (int kk = 0; kk < kPrefillKeys; ++kk)
            {
                float const pk = ps[warp * kPrefillKeys + kk];
                if (pk == 0.f)
                {
                    continue; // same value in every lane
                }
#pragma unroll
                for (int i = 0; i < NDL; ++i)
                {
                    int const d = lane + kWarpSize * i;
                    if (d < D)
                    {
                        acc[r][i] += pk * toFloat(vs[kk * D + d]);
                    }
                }
            }
            __syncwarp();
        }
    }

    T* out = static_cast<T*>(a.output) + qRow * T_ * D;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
    {
        int const t = t0 + warp * kRowsPerWarp + r;
        if (t >= T_)
        {
            continue;
        }
        float const inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
        for (int i = 0; i < NDL; ++i)
        {
            int const d = lane + kWarpSize * i;
            if (d < D)
            {
                out[static_cast<size_t>(t) * D + d] = fromFloat<T>(acc[r][i] * inv);
            }
        }
    }
}
} // namespace lt

#endif // LTEXPORT_SINK_WINDOW_PREFILL_CUH
