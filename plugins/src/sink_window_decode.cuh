/*
 * Decode (T == 1): split-KV "flash decoding". One block per (split, kv head x head group, batch row) reads its
 * share of the ring once for all query heads of a GQA group, so the kernel is bound by cache bandwidth.
 * Chunks of keys are staged into shared memory with 16-byte loads; scores use a multi-value warp reduction;
 * the running max/sum live in shared memory so all warps rescale identically and their accumulators simply add.
 * With several splits, partial (normalised output, max, sum) go to the workspace and a combine kernel merges them.
 */
#ifndef LTEXPORT_SINK_WINDOW_DECODE_CUH
#define LTEXPORT_SINK_WINDOW_DECODE_CUH

#include "sink_window_common.cuh"

namespace lt
{
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * kWarpSize;
constexpr int kDecodeStageBytes = 16384; // K + V chunk in shared memory
constexpr int kDecodeMaxSplits = 32;
constexpr int kDecodeTargetBlocks = 264; // ~2 waves of 132 SMs; fixed so the split count depends on shapes only

struct DecodeArgs : KernelArgs
{
    int headGroups; // ceil(G / GT)
    int splits;
    int keysPerSplit; // multiple of the chunk size
};
// Measured with nvcc 13.0: past 120 bytes, or with a padding hole, the decode kernel's tensor reads lose their
// read-only (ld.global.nc) loads. Add fields with care.
static_assert(sizeof(DecodeArgs) <= 120, "DecodeArgs grew: check the decode PTX still uses ld.global.nc");

template <typename T, int NDL>
struct DecodeShape
{
    static constexpr int kMaxD = kWarpSize * NDL;
    static constexpr int kChunk = kDecodeStageBytes / (2 * kMaxD * static_cast<int>(sizeof(T)));
    static_assert(kChunk >= 8 && kChunk % 8 == 0, "chunk must keep the V stage 16-byte aligned");
};

// T: element type; NDL: head dims per lane (D <= 32*NDL); GT: query heads per block (power of two).
template <typename T, int NDL, int GT>
__global__ void __launch_bounds__(kDecodeThreads) decodeKernel(DecodeArgs a)
{
    using Shape = DecodeShape<T, NDL>;
    constexpr int kChunk = Shape::kChunk;
    constexpr int kReduceBytes = kDecodeWarps * GT * Shape::kMaxD * static_cast<int>(sizeof(float));
    constexpr int kStageBytes = kReduceBytes > kDecodeStageBytes ? kReduceBytes : kDecodeStageBytes;
    __shared__ float4 stage[kStageBytes / 16]; // K chunk | V chunk, later the cross-warp reduction
    __shared__ float probs[GT][kChunk];         // scores, then probabilities
    __shared__ float runMax[GT];
    __shared__ float runSum[GT];
    __shared__ float rescale[GT];

    int const split = blockIdx.x;
    int const hkv = blockIdx.y / a.headGroups;
    int const group = blockIdx.y % a.headGroups;
    int const b = blockIdx.z;
    int const warp = threadIdx.x / kWarpSize;
    int const lane = threadIdx.x % kWarpSize;
    int const D = a.headDim;
    int const G = a.qHeads / a.kvHeads;
    int const C = a.cacheLen;

    int64_t const len = historyLength(a.pastLen, b);
    int const filled = filledSlots(len, C);
    int const nKeys = filled + 1; // + the new token, key index `filled`
    int const kBegin = split * a.keysPerSplit;
    int const kEnd = min(nKeys, kBegin + a.keysPerSplit);

    T const* query = static_cast<T const*>(a.query);
    size_t const kvRow = static_cast<size_t>(b) * a.kvHeads + hkv;
    T const* pastK = static_cast<T const*>(a.pastKey) + kvRow * C * D;
    T const* pastV = static_cast<T const*>(a.pastValue) + kvRow * C * D;
    T const* newK = static_cast<T const*>(a.key) + kvRow * D; // T == 1
    T const* newV = static_cast<T const*>(a.value) + kvRow * D;

    float q[GT][NDL];
#pragma unroll
    for (int g = 0; g < GT; ++g)
    {
        int const inGroup = group * GT + g;
        int const h = hkv * G + inGroup;
#pragma unroll
        for (int i = 0; i < NDL; ++i)
        {
            int const d = lane + kWarpSize * i;
            q[g][i] = (inGroup < G && d < D)
                ? toFloat(query[(static_cast<size_t>(b) * a.qHeads + h) * D + d]) * a.scaleLog2
                : 0.f;
        }
    }
    float acc[GT][NDL];
#pragma unroll
    for (int g = 0; g < GT; ++g)
#pragma unroll
        for (int i = 0; i < NDL; ++i)
            acc[g][i] = 0.f;
    if (threadIdx.x < GT)
    {
        runMax[threadIdx.x] = -INFINITY;
        runSum[threadIdx.x] = 0.f;
    }

    T* sk = reinterpret_cast<T*>(stage);
    T* sv = sk + kChunk * D;
    constexpr int kGroupShift = 5 - log2Exact(GT); // lane >> shift = head whose score the lane holds
    bool const scoreWriter = (lane & ((1 << kGroupShift) - 1)) == 0;
    int const scoreHead = lane >> kGroupShift;
    bool const dense = a.dense != 0;

    for (int c0 = kBegin; c0 < kEnd; c0 += kChunk)
    {
        int const n = min(kChunk, kEnd - c0);
        __syncthreads(); // previous chunk consumed; runMax/runSum initialised
        int const nCached = max(0, min(c0 + n, filled) - c0);
        if (nCached > 0)
        {
            blockCopy(sk, pastK + static_cast<size_t>(c0) * D, nCached * D);
            blockCopy(sv, pastV + static_cast<size_t>(c0) * D, nCached * D);
        }
        if (filled >= c0 && filled < c0 + n)
        {
            int const row = (filled - c0) * D;
            for (int d = threadIdx.x; d < D; d += blockDim.x)
            {
                sk[row + d] = newK[d];
                sv[row + d] = newV[d];
            }
        }
        __syncthreads();

        // Scores: one warp per key, lanes over head dims.
        for (int kk = warp; kk < n; kk += kDecodeWarps)
        {
            int const keyIdx = c0 + kk;
            int64_t const pos = keyIdx < filled ? slotPosition(keyIdx, len, a.sink, a.window) : len;
            bool const vis = visible(pos, len, a.sink, a.window, dense);
            float part[GT];
#pragma unroll
            for (int g = 0; g < GT; ++g)
            {
                part[g] = 0.f;
            }
#pragma unroll
            for (int i = 0; i < NDL; ++i)
            {
                int const d = lane + kWarpSize * i;
                float const kv = d < D ? toFloat(sk[kk * D + d]) : 0.f;
#pragma unroll
                for (int g = 0; g < GT; ++g)
                {
                    part[g] += q[g][i] * kv;
                }
            }
            float const s = warpSumMany<GT>(part, lane);
            if (scoreWriter)
            {
                probs[scoreHead][kk] = vis ? s : -INFINITY;
            }
        }
        __syncthreads();

        // Online softmax over the chunk: one warp per head.
        for (int g = warp; g < GT; g += kDecodeWarps)
        {
            float cmax = -INFINITY;
            for (int kk = lane; kk < n; kk += kWarpSize)
            {
                cmax = fmaxf(cmax, probs[g][kk]);
            }
            cmax = warpMax(cmax);
            float const mOld = runMax[g];
            float const mNew = fmaxf(mOld, cmax);
            float sum = 0.f;
            for (int kk = lane; kk < n; kk += kWarpSize)
            {
                float const p = mNew == -INFINITY ? 0.f : exp2f(probs[g][kk] - mNew);
                probs[g][kk] = p;
                sum += p;
            }
            sum = warpSum(sum);
            if (lane == 0)
            {
                float const alpha = mNew == -INFINITY ? 1.f : exp2f(mOld - mNew);
                rescale[g] = alpha;
                runSum[g] = runSum[g] * alpha + sum;
                runMax[g] = mNew;
            }
        }
        __syncthreads();

        // P @ V: one warp per key, lanes over head dims.
#pragma unroll
        for (int g = 0; g < GT; ++g)
        {
            float const alpha = rescale[g];
#pragma unroll
            for (int i = 0; i < NDL; ++i)
            {
                acc[g][i] *= alpha;
            }
        }
        for (int kk = warp; kk < n; kk += kDecodeWarps)
        {
            float v[NDL];
#pragma unroll
            for (int i = 0; i < NDL; ++i)
            {
                int const d = lane + kWarpSize * i;
                v[i] = d < D ? toFloat(sv[kk * D + d]) : 0.f;
            }
#pragma unroll
            for (int g = 0; g < GT; ++g)
            {
                float const p = probs[g][kk];
#pragma unroll
                for (int i = 0; i < NDL; ++i)
                {
                    acc[g][i] += p * v[i];
                }
            }
        }
    }

    // Warps share runMax, so their accumulators add up directly.
    __syncthreads();
    float* red = reinterpret_cast<float*>(stage); // [warp][g][kMaxD]
#pragma unroll
    for (int g = 0; g < GT; ++g)
#pragma unroll
        for (int i = 0; i < NDL; ++i)
            red[(warp * GT + g) * Shape::kMaxD + lane + kWarpSize * i] = acc[g][i];
    __syncthreads();

    for (int idx = threadIdx.x; idx < GT * D; idx += blockDim.x)
    {
        int const g = idx / D;
        int const d = idx % D;
        int const inGroup = group * GT + g;
        if (inGroup >= G)
        {
            continue;
        }
        float total = 0.f;
#pragma unroll
        for (int w = 0; w < kDecodeWarps; ++w)
        {
            total += red[(w * GT + g) * Shape::kMaxD + d];
        }
        float const l = runSum[g];
        float const o = l > 0.f ? total / l : 0.f;
        size_t const qRow = static_cast<size_t>(b) * a.qHeads + hkv * G + inGroup;
        if (a.splits == 1)
        {
            static_cast<T*>(a.output)[qRow * D + d] = fromFloat<T>(o);
        }
        else
        {
            size_t const part = qRow * a.splits + split;
            a.partialOut[part * D + d] = o;
            if (d == 0)
            {
                a.partialMl[part * 2] = runMax[g];
                a.partialMl[part * 2 + 1] = l;
            }
        }
    }
}

// Merges split partials: out = sum_s o_s * l_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M). One block per query row.
template <typename T>
__global__ void __launch_bounds__(128) decodeCombineKernel(
    float const* partialOut, float const* partialMl, void* output, int splits, int headDim)
{
    size_t const qRow = blockIdx.x;
    float const* ml = partialMl + qRow * splits * 2;
    float m = -INFINITY;
    for (int s = 0; s < splits; ++s)
    {
        if (ml[2 * s + 1] > 0.f)
        {
            m = fmaxf(m, ml[2 * s]);
        }
    }
    for (int d = threadIdx.x; d < headDim; d += blockDim.x)
    {
        float num = 0.f;
        float den = 0.f;
        for (int s = 0; s < splits; ++s)
        {
            float const l = ml[2 * s + 1];
            if (l > 0.f)
            {
                float const w = l * exp2f(ml[2 * s] - m);
                num += w * partialOut[(qRow * splits + s) * headDim + d];
                den += w;
            }
        }
        static_cast<T*>(output)[qRow * headDim + d] = fromFloat<T>(den > 0.f ? num / den : 0.f);
    }
}
} // namespace lt

#endif // LTEXPORT_SINK_WINDOW_DECODE_CUH
