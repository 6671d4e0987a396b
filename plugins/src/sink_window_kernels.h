/*
 * C API of the sink+window attention kernels (ltexport::SinkWindowAttention).
 *
 * Raw pointers and ints only: no TensorRT types, so the same kernels serve the IPluginV3 glue, the ctypes
 * correctness harness and the benchmark. All tensors are contiguous (row-major), on the device, and share
 * one floating dtype except past_len (int64).
 *
 *   query   [B, Hq,  T,   D]     key / value           [B, Hkv, T,   D]   (RoPE already applied)
 *   past_*  [B, Hkv, S+W, D]     present_* (outputs)   [B, Hkv, S+W, D]   past_len [B] int64
 *   output  [B, Hq,  T,   D]
 *
 * New token t of row b sits at position p = past_len[b] + t. Position j is cached in slot j (j < S) or
 * S + (j - S) mod W; streaming attends keys j <= p with j < S or j > p - W, dense attends every key j <= p that
 * is in the ring or among the new tokens. present_* may alias past_* (in-place update); the attention reads the
 * old ring before it is overwritten.
 */
#ifndef LTEXPORT_SINK_WINDOW_KERNELS_H
#define LTEXPORT_SINK_WINDOW_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum
{
    LT_DTYPE_FP32 = 0,
    LT_DTYPE_FP16 = 1,
    LT_DTYPE_BF16 = 2
};

enum
{
    LT_PREFILL_DENSE = 0,
    LT_PREFILL_STREAMING = 1
};

/* Largest head dimension the kernels are instantiated for. */
#define LT_MAX_HEAD_DIM 256

typedef struct LtSinkWindowParams
{
    int dtype;        /* LT_DTYPE_* */
    int batch;        /* B */
    int q_heads;      /* Hq, a multiple of kv_heads */
    int kv_heads;     /* Hkv */
    int seq_len;      /* T new tokens; T == 1 takes the split-KV decode path */
    int head_dim;     /* D, 1..LT_MAX_HEAD_DIM */
    int sink;         /* S >= 0 */
    int window;       /* W >= 1 */
    int prefill_mode; /* LT_PREFILL_*; applies to every T (dense decode also sees the entry being overwritten) */
    float scale;      /* softmax scale, usually 1/sqrt(D) */
    void const* query;
    void const* key;
    void const* value;
    void const* past_key;
    void const* past_value;
    int64_t const* past_len;
    void* output;
    void* present_key;
    void* present_value;
    void* workspace; /* at least lt_sink_window_workspace_size(...) bytes, 16-byte aligned; may be NULL if 0 */
    size_t workspace_size;
} LtSinkWindowParams;

/* sizeof(LtSinkWindowParams), so foreign callers (ctypes) can check their struct layout. */
int lt_sink_window_params_size(void);

/* NULL when the shapes/attributes are supported, else a static one-line message naming the problem. */
char const* lt_sink_window_check(LtSinkWindowParams const* params);

/* Workspace bytes needed by any call with batch <= max_batch and the other dims as given (decode split-KV
 * partial results; prefill needs none). Returns 0 for unsupported arguments. */
size_t lt_sink_window_workspace_size(
    int dtype, int max_batch, int q_heads, int kv_heads, int sink, int window, int head_dim);

/* Runs attention and the ring-buffer update on `stream`. Returns cudaErrorInvalidValue when
 * lt_sink_window_check fails or the workspace is too small, else the launch status. */
cudaError_t lt_sink_window_attention(LtSinkWindowParams const* params, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LTEXPORT_SINK_WINDOW_KERNELS_H */
