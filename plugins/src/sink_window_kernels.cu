/*
 * Host side of the sink+window kernels: argument checks, dtype / head-dim / GQA dispatch, the decode split plan
 * (which also sizes the workspace) and the ring-buffer update. See sink_window_kernels.h for the contract.
 */
#include "sink_window_kernels.h"

#include "sink_window_common.cuh"
#include "sink_window_decode.cuh"
#include "sink_window_prefill.cuh"

#include <limits.h>

namespace lt
{
namespace
{
constexpr int kUpdateThreads = 128;
constexpr int kUpdateMaxBlocks = 4096;

struct UpdateArgs : KernelArgs
{
    void* presentKey;
    void* presentValue;
    size_t total; // B * Hkv * T * D
    int seqLen;
};

// Writes the new tokens into the ring. A token is skipped when a later one of the same call lands in the same
// ring slot (t + W < T), so exactly one writer per slot and the latest position wins without atomics.
template <typename T>
__global__ void __launch_bounds__(kUpdateThreads) cacheUpdateKernel(UpdateArgs a)
{
    size_t const stride = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < a.total; idx += stride)
    {
        int const d = static_cast<int>(idx % a.headDim);
        size_t const rest = idx / a.headDim;
        int const t = static_cast<int>(rest % a.seqLen);
        size_t const bh = rest / a.seqLen;
        int const b = static_cast<int>(bh / a.kvHeads);
        int64_t const len = historyLength(a.pastLen, b);
        int64_t const pos = len + t;
        if (pos >= a.sink && t + a.window < a.seqLen)
        {
            continue;
        }
        size_t const dst = (bh * a.cacheLen + slotOf(pos, a.sink, a.window)) * a.headDim + d;
        static_cast<T*>(a.presentKey)[dst] = static_cast<T const*>(a.key)[idx];
        static_cast<T*>(a.presentValue)[dst] = static_cast<T const*>(a.value)[idx];
    }
}

struct SplitPlan
{
    int splits;
    int keysPerSplit;
};

// Enough blocks to fill the GPU for small batches, at least one staged chunk per split, at most kDecodeMaxSplits.
// Depends on shapes only, so the plugin can size the workspace at build time.
SplitPlan planDecodeSplits(int batch, int kvHeads, int headGroups, int cacheLen, int chunk)
{
    int const nKeys = cacheLen + 1;
    int64_t const blocks = static_cast<int64_t>(batch > 0 ? batch : 1) * kvHeads * headGroups;
    int64_t const want = (kDecodeTargetBlocks + blocks - 1) / blocks;
    int const maxUseful = (nKeys + chunk - 1) / chunk;
    int splits = static_cast<int>(want < maxUseful ? want : maxUseful);
    splits = splits < 1 ? 1 : (splits > kDecodeMaxSplits ? kDecodeMaxSplits : splits);
    int per = (nKeys + splits - 1) / splits;
    per = (per + chunk - 1) / chunk * chunk;
    return {(nKeys + per - 1) / per, per};
}

int dimsPerLane(int headDim)
{
    return headDim <= 64 ? 2 : (headDim <= 128 ? 4 : 8);
}

// Query heads handled by one decode block: the GQA group rounded up to a power of two, capped so that
// q + accumulators stay within ~64 registers per lane.
int headsPerBlock(int group, int ndl)
{
    int gt = group <= 1 ? 1 : (group <= 2 ? 2 : (group <= 4 ? 4 : 8));
    int const cap = ndl >= 8 ? 4 : 8;
    return gt > cap ? cap : gt;
}

size_t elementSize(int dtype)
{
    return dtype == LT_DTYPE_FP32 ? 4 : 2;
}

int decodeChunk(int dtype, int ndl)
{
    return kDecodeStageBytes / (2 * kWarpSize * ndl * static_cast<int>(elementSize(dtype)));
}

size_t alignUp(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

// Workspace layout for a decode call: partial outputs, then (max, sum) pairs.
size_t decodeWorkspaceBytes(int batch, int qHeads, int splits, int headDim)
{
    if (splits <= 1)
    {
        return 0;
    }
    size_t const parts = static_cast<size_t>(batch) * qHeads * splits;
    return alignUp(parts * headDim * sizeof(float), 256) + parts * 2 * sizeof(float);
}

// The C API parameters as the fields all kernels share: one place for the tensors and the ring geometry.
void fillKernelArgs(KernelArgs& a, LtSinkWindowParams const& p)
{
    a.query = p.query;
    a.key = p.key;
    a.value = p.value;
    a.pastKey = p.past_key;
    a.pastValue = p.past_value;
    a.pastLen = p.past_len;
    a.output = p.output;
    a.qHeads = p.q_heads;
    a.kvHeads = p.kv_heads;
    a.headDim = p.head_dim;
    a.cacheLen = p.sink + p.window;
    a.sink = p.sink;
    a.window = p.window;
    a.dense = p.prefill_mode == LT_PREFILL_DENSE;
    a.scaleLog2 = p.scale * 1.4426950408889634f;
}

template <typename T, int NDL, int GT>
cudaError_t launchDecode(LtSinkWindowParams const& p, cudaStream_t stream)
{
    int const group = p.q_heads / p.kv_heads;
    DecodeArgs a{};
    fillKernelArgs(a, p);
    a.headGroups = (group + GT - 1) / GT;
    SplitPlan const plan
        = planDecodeSplits(p.batch, p.kv_heads, a.headGroups, a.cacheLen, DecodeShape<T, NDL>::kChunk);
    a.splits = plan.splits;
    a.keysPerSplit = plan.keysPerSplit;
    if (plan.splits > 1)
    {
        size_t const parts = static_cast<size_t>(p.batch) * p.q_heads * plan.splits;
        a.partialOut = static_cast<float*>(p.workspace);
        a.partialMl = reinterpret_cast<float*>(
            static_cast<char*>(p.workspace) + alignUp(parts * p.head_dim * sizeof(float), 256));
    }
    dim3 const grid(plan.splits, p.kv_heads * a.headGroups, p.batch);
    auto kernel = decodeKernel<T, NDL, GT>;
    LT_LAUNCH(kernel, grid, dim3(kDecodeThreads), 0, stream, a);
    cudaError_t err = lastLaunchError();
    if (err != cudaSuccess || plan.splits == 1)
    {
        return err;
    }
    auto combine = decodeCombineKernel<T>;
    LT_LAUNCH(combine, dim3(p.batch * p.q_heads), dim3(128), 0, stream, a.partialOut, a.partialMl, p.output,
        plan.splits, p.head_dim);
    return lastLaunchError();
}

template <typename T, int NDL>
cudaError_t dispatchDecode(LtSinkWindowParams const& p, cudaStream_t stream)
{
    switch (headsPerBlock(p.q_heads / p.kv_heads, NDL))
    {
    case 1: return launchDecode<T, NDL, 1>(p, stream);
    case 2: return launchDecode<T, NDL, 2>(p, stream);
    case 4: return launchDecode<T, NDL, 4>(p, stream);
    default: return launchDecode<T, NDL, (NDL >= 8 ? 4 : 8)>(p, stream);
    }
}

template <typename T, int NDL>
cudaError_t launchPrefill(LtSinkWindowParams const& p, cudaStream_t stream)
{
    PrefillArgs a{};
    fillKernelArgs(a, p);
    a.seqLen = p.seq_len;
    a.keyStride = conflictFreeStride<T>(p.head_dim);
    size_t const smem = prefillSmemBytes<T>(p.head_dim);
    auto kernel = prefillKernel<T, NDL>;
    if (smem > 48 * 1024)
    {
        cudaError_t const err = allowDynamicSmem(kernel, static_cast<int>(smem));
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    dim3 const grid((p.seq_len + kPrefillRows - 1) / kPrefillRows, p.q_heads, p.batch);
    LT_LAUNCH(kernel, grid, dim3(kPrefillThreads), smem, stream, a);
    return lastLaunchError();
}

template <typename T>
cudaError_t updateCache(LtSinkWindowParams const& p, cudaStream_t stream)
{
    size_t const cacheBytes
        = static_cast<size_t>(p.batch) * p.kv_heads * (p.sink + p.window) * p.head_dim * sizeof(T);
    // Not aliased: start from a copy of the old ring. Aliased (in-place): only the new rows are written.
    if (p.present_key != p.past_key)
    {
        cudaError_t const err = memcpyDeviceAsync(p.present_key, p.past_key, cacheBytes, stream);
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    if (p.present_value != p.past_value)
    {
        cudaError_t const err = memcpyDeviceAsync(p.present_value, p.past_value, cacheBytes, stream);
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    UpdateArgs a{};
    fillKernelArgs(a, p);
    a.presentKey = p.present_key;
    a.presentValue = p.present_value;
    a.seqLen = p.seq_len;
    a.total = static_cast<size_t>(p.batch) * p.kv_heads * p.seq_len * p.head_dim;
    if (a.total == 0)
    {
        return cudaSuccess;
    }
    size_t blocks = (a.total + kUpdateThreads - 1) / kUpdateThreads;
    blocks = blocks > kUpdateMaxBlocks ? kUpdateMaxBlocks : blocks;
    auto kernel = cacheUpdateKernel<T>;
    LT_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kUpdateThreads), 0, stream, a);
    return lastLaunchError();
}

template <typename T>
cudaError_t run(LtSinkWindowParams const& p, cudaStream_t stream)
{
    cudaError_t err = cudaSuccess;
    if (p.batch > 0 && p.seq_len > 0)
    {
        int const ndl = dimsPerLane(p.head_dim);
        if (p.seq_len == 1)
        {
            err = ndl == 2 ? dispatchDecode<T, 2>(p, stream)
                : ndl == 4 ? dispatchDecode<T, 4>(p, stream)
                           : dispatchDecode<T, 8>(p, stream);
        }
        else
        {
            err = ndl == 2 ? launchPrefill<T, 2>(p, stream)
                : ndl == 4 ? launchPrefill<T, 4>(p, stream)
                           : launchPrefill<T, 8>(p, stream);
        }
    }
    // The ring is updated after the attention has read it (same stream), so in-place aliasing is safe.
    return err != cudaSuccess ? err : updateCache<T>(p, stream);
}
} // namespace
} // namespace lt

extern "C" int lt_sink_window_params_size(void)
{
    return static_cast<int>(sizeof(LtSinkWindowParams));
}

extern "C" char const* lt_sink_window_check(LtSinkWindowParams const* p)
{
    if (p == nullptr)
    {
        return "null parameter block";
    }
    if (p->dtype != LT_DTYPE_FP32 && p->dtype != LT_DTYPE_FP16 && p->dtype != LT_DTYPE_BF16)
    {
        return "unsupported dtype: expected fp32, fp16 or bf16";
    }
    if (p->batch < 0 || p->batch > 65535)
    {
        return "batch must be in 0..65535";
    }
    if (p->q_heads < 1 || p->kv_heads < 1 || p->q_heads > 65535)
    {
        return "q_heads and kv_heads must be positive (q_heads <= 65535)";
    }
    if (p->q_heads % p->kv_heads != 0)
    {
        return "q_heads must be a multiple of kv_heads (GQA)";
    }
    if (p->seq_len < 0)
    {
        return "seq_len must be >= 0";
    }
    if (p->head_dim < 1 || p->head_dim > LT_MAX_HEAD_DIM)
    {
        return "head_dim must be in 1..256";
    }
    if (p->sink < 0 || p->window < 1)
    {
        return "sink must be >= 0 and window >= 1";
    }
    if (static_cast<int64_t>(p->sink) + p->window > INT_MAX / LT_MAX_HEAD_DIM)
    {
        return "sink + window is too large";
    }
    if (p->prefill_mode != LT_PREFILL_DENSE && p->prefill_mode != LT_PREFILL_STREAMING)
    {
        return "prefill_mode must be dense (0) or streaming (1)";
    }
    if (!isfinite(p->scale))
    {
        return "scale must be finite";
    }
    bool const any = p->batch > 0;
    bool const anyNew = any && p->seq_len > 0;
    if (any
        && (p->past_key == nullptr || p->past_value == nullptr || p->past_len == nullptr || p->present_key == nullptr
            || p->present_value == nullptr))
    {
        return "null cache or past_len pointer";
    }
    if (anyNew && (p->query == nullptr || p->key == nullptr || p->value == nullptr || p->output == nullptr))
    {
        return "null query/key/value/output pointer";
    }
    if ((p->present_key == p->past_key) != (p->present_value == p->past_value))
    {
        return "present_key and present_value must both alias their past input or neither";
    }
    return nullptr;
}

extern "C" size_t lt_sink_window_workspace_size(
    int dtype, int max_batch, int q_heads, int kv_heads, int sink, int window, int head_dim)
{
    using namespace lt;
    if (max_batch < 1 || q_heads < 1 || kv_heads < 1 || q_heads % kv_heads != 0 || head_dim < 1
        || head_dim > LT_MAX_HEAD_DIM || sink < 0 || window < 1 || (dtype < LT_DTYPE_FP32 || dtype > LT_DTYPE_BF16))
    {
        return 0;
    }
    int const ndl = dimsPerLane(head_dim);
    int const gt = headsPerBlock(q_heads / kv_heads, ndl);
    int const headGroups = (q_heads / kv_heads + gt - 1) / gt;
    int const chunk = decodeChunk(dtype, ndl);
    size_t best = 0;
    for (int b = 1; b <= max_batch; ++b)
    {
        SplitPlan const plan = planDecodeSplits(b, kv_heads, headGroups, sink + window, chunk);
        if (plan.splits == 1)
        {
            break; // larger batches fill the GPU without splitting
        }
        size_t const bytes = decodeWorkspaceBytes(b, q_heads, plan.splits, head_dim);
        best = bytes > best ? bytes : best;
    }
    return best;
}

extern "C" cudaError_t lt_sink_window_attention(LtSinkWindowParams const* p, cudaStream_t stream)
{
    if (lt_sink_window_check(p) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (p->seq_len == 1 && p->batch > 0)
    {
        size_t const need = lt_sink_window_workspace_size(
            p->dtype, p->batch, p->q_heads, p->kv_heads, p->sink, p->window, p->head_dim);
        if (need > 0 && (p->workspace == nullptr || p->workspace_size < need))
        {
            return cudaErrorInvalidValue;
        }
    }
    switch (p->dtype)
    {
    case LT_DTYPE_FP32: return lt::run<float>(*p, stream);
    case LT_DTYPE_FP16: return lt::run<__half>(*p, stream);
    default: return lt::run<__nv_bfloat16>(*p, stream);
    }
}
