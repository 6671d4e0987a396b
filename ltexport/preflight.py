"""Before a build starts: will its output fit on disk, and its validation in memory?

Estimates come from the config alone (a skeleton with meta parameters: exact shapes, no memory).
"""

import shutil
from pathlib import Path

from ltexport.errors import LtexportError

GB = 1e9
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Python, torch, ONNX Runtime and the graph itself, measured at about 1 GB on tiny models.
RUNTIME_BASE = 1.5 * GB
# model.onnx, plan, report, tokenizer and Polygraphy JSON beside the weights.
DISK_MARGIN = 256 * 2**20


def parameter_count(source, num_layers: int | None = None) -> int:
    from ltexport.models.skeleton import parameter_count as count

    return count(source.skeleton("fp32", num_layers))


def weight_bytes(params: int, dtype: str) -> int:
    return params * BYTES[dtype]


def validation_memory(params: int, dtype: str, tokens: int, vocab: int, heads: int, graphs: int = 1) -> float:
    """Peak bytes of validating a model of `params` parameters.

    The PyTorch reference holds the weights in `dtype`; ONNX Runtime holds them again, and on CPU
    computes fp16/bf16 ops in fp32 (it inserts Casts and folds them into fp32 weight copies), so
    allow both copies there, once per graph compared at the same time (`graphs`: model.onnx and the
    fast graph of an ONNX Runtime build). Activations: prefill logits [tokens, vocab] in fp32, held
    by the reference, each graph and the comparison, and one layer's attention scores [heads, tokens,
    tokens] (x2).
    """
    b = BYTES[dtype]
    backend = b + (4 if b < 4 else 0)
    activations = tokens * vocab * 4 * (3 + graphs) + heads * tokens * tokens * 4 * 2
    return params * (b + backend * graphs) + activations + RUNTIME_BASE


def available_memory() -> float:
    """MemAvailable (free + reclaimable page cache), what a new process can use without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_disk(out: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when the filesystem of OUT's parent lacks `needed` bytes."""
    parent = Path(out).expanduser().absolute().parent
    if not parent.is_dir():
        raise LtexportError(f"directory {parent} does not exist; create it first")
    free = shutil.disk_usage(parent).free
    if free < needed + DISK_MARGIN:
        raise LtexportError(
            f"not enough disk space for {out}: {what} needs {(needed + DISK_MARGIN) / GB:.1f} GB but "
            f"{parent} has {free / GB:.1f} GB free; free space or choose another -o"
        )


# --- Memory of plan and eval: the whole model in fp32, or one layer at a time (models/streaming.py) ---

# Python, torch, transformers and a tokenizer before any weight, measured at about 0.6 GB.
TORCH_BASE = 0.7 * GB
FITS_FRACTION = 0.6  # the in-memory path is chosen when it needs at most this share of the available memory
FP32 = 4


def layer_activations(sizes, tokens: int, last_queries: int = 0) -> float:
    """Peak fp32 activations of one decoder layer over `tokens` tokens: a few hidden-size tensors
    (input, residual, norm, attention output), q/k/v with their RoPE copies, the MLP's gate, up and
    product, and the lazy ratio's scores over the last queries (attention itself runs in chunks)."""
    qkv = (sizes.heads + 2 * sizes.kv_heads) * sizes.head_dim
    per_token = 6 * sizes.hidden + 2 * qkv + 3 * sizes.intermediate
    ratio = sizes.heads * (tokens * sizes.head_dim + 3 * last_queries * tokens)
    return FP32 * (tokens * per_token + ratio)


def plan_memory(sizes, tokens: int, last_queries: int, streamed: bool) -> float:
    """Peak bytes of measuring lazy ratios: the fp32 weights held at once (the model, or its largest
    part plus one tensor being converted), the activations of one layer, and the runtime."""
    weights = FP32 * (sizes.largest_part + sizes.hidden * sizes.intermediate) if streamed else FP32 * sizes.total
    return TORCH_BASE + weights + layer_activations(sizes, tokens, last_queries)


def choose_streaming(requested: bool | None, in_memory: float, streamed: float, what: str, notice=None,
                     in_memory_fix: str = "drop --no-stream-layers to stream the model layer by layer") -> bool:
    """True to run `what` layer by layer. requested: True/False forces a path, None picks the
    in-memory one when it fits FITS_FRACTION of the available memory (else a one-line notice)."""
    available = available_memory()
    if requested is False:
        _require_memory(in_memory, available, what, in_memory_fix)
        return False
    if requested is None and in_memory <= FITS_FRACTION * available:
        return False
    _require_memory(streamed, available, f"{what}, even layer by layer,", "free memory or use a larger machine")
    if requested is None and notice is not None:
        notice(f"{what}: the whole model needs ~{in_memory / GB:.1f} GB, {available / GB:.1f} GB is available; "
               f"streaming it layer by layer (~{streamed / GB:.1f} GB)")
    return True


def _require_memory(need: float, available: float, what: str, fix: str) -> None:
    if need > available:
        raise LtexportError(f"{what} needs ~{need / GB:.1f} GB of memory but {available / GB:.1f} GB is available; {fix}")


def eval_memory(sizes, longest: int, tokens: int, rows: int, streamed: bool, variants: int = 1,
                prefill_chunk: int = 1024) -> float:
    """Peak bytes of `ltexport eval` over texts of `tokens` tokens in all (hidden states of every
    variant's stream included), the longest `longest`, scoring up to `rows` positions per text.

    In memory: the fp32 model, one chunk's activations, and the original's caches at the longest
    context plus one transplanted copy per variant. Layer by layer: one part's weights, one layer's
    activations at the longest text, every stream's hidden states, the original's keys and values
    at one layer, and the scored rows' logits."""
    if not streamed:
        caches = FP32 * 2 * sizes.num_layers * sizes.kv_heads * sizes.head_dim * longest * (1 + variants)
        chunk = min(longest, prefill_chunk) if prefill_chunk else longest
        return TORCH_BASE + FP32 * sizes.total + layer_activations(sizes, chunk) + caches
    weights = FP32 * (sizes.largest_part + sizes.hidden * sizes.intermediate)
    held = FP32 * sizes.hidden * tokens
    keys = FP32 * 2 * sizes.kv_heads * sizes.head_dim * longest
    logits = FP32 * 2 * sizes.vocab * rows
    return TORCH_BASE + weights + layer_activations(sizes, longest) + held + keys + logits


def bench_memory(weights: float, extra: dict[str, float], probe: float) -> float:
    """Peak bytes of `ltexport bench`: every variant's worker holds its weights and runtime at once,
    and one of them at a time also holds a point's caches and activations (`extra`: the largest per
    variant); the parent holds the bandwidth probe's buffer."""
    return (len(extra) + 1) * RUNTIME_BASE + len(extra) * weights + max(extra.values(), default=0) + probe


def require_bench_memory(need: float) -> None:
    _require_memory(need, available_memory(), "this bench", "lower --contexts, --batches or --batch-context, "
                    "or pass --no-transformers/--no-peers")
