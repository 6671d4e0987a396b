"""The physical bound of a decode step: every weight and every cached key/value is read once.

At small batch a decode step is memory-bound, so time ~ bytes read / bandwidth and the bound's
predicted speedup of the hybrid over the no-lazy model is bytes(no-lazy) / bytes(hybrid). It ignores
compute, kernel overheads and the cache copies the exported graph makes (ONNX Runtime writes each
present cache anew every step); measured speedups below it show how much of it an engine realises.
"""

from ltexport.plan.schema import Plan
from ltexport.plan.summary import kv_cache_bytes


def weight_bytes_read(model) -> int:
    """Parameter bytes one decode step reads: all of them, except an untied embedding table (only
    the batch's rows are gathered). A tied table is read whole by the LM head."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if embed is not head:
        total -= embed.numel() * embed.element_size()
    return total


def step_bytes(weight_bytes: int, plan: Plan, context: int, batch: int, element_bytes: int) -> int:
    """Bytes read by one decode step at `context` cached tokens for `batch` sequences."""
    return weight_bytes + batch * kv_cache_bytes(plan, context, element_bytes, hybrid=bool(plan.lazy_layers))


def measure_bandwidth(threads: int | None = None, size: int = 2**30, repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s: the best of `repeats` torch sums over `size` bytes, with the
    benchmark's threads (all cores by default)."""
    import os
    import time

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        data = torch.ones(size // 4, dtype=torch.float32)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            data.sum()
            best = min(best, time.perf_counter() - start)
        return size / best
    finally:
        torch.set_num_threads(previous)
