"""The physical bound of a decode step: every weight and every cached key/value is read once.

At small batch a decode step is memory-bound, so time ~ bytes read / bandwidth and the bound's
predicted speedup of the hybrid over the no-lazy model is bytes(no-lazy) / bytes(hybrid). It ignores
compute and kernel overheads; measured speedups below it show how much of it an engine realises, and
bound_fraction how close a step comes to reading its bytes at the bandwidth measured beside it.
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


PROBE_BYTES = 2**30
SETTLE_S = 0.05  # before and after a probe: spinning thread pools (ONNX Runtime's, OpenMP's) go idle


class BandwidthProbe:
    """Memory read bandwidth in bytes/s, measured again around every timed decode run.

    Shared hosts swing between bandwidth regimes within a second (on the 2-core CI kind, about 31 and
    about 52 GB/s with 2 threads, as neighbours come and go), so one probe at the start of a run says
    little about the bandwidth a later decode had. The bench probes right before and right after each
    run and relates that run to the mean of the two. One probe is the median of `repeats` torch sums
    over one `size`-byte buffer (allocated once), with the benchmark's threads (all cores by default).
    """

    def __init__(self, threads: int | None = None, size: int = PROBE_BYTES, repeats: int = 3):
        import os

        import torch

        self.threads = threads or os.cpu_count() or 1
        self.repeats = repeats
        self.data = torch.ones(size // 4, dtype=torch.float32)
        self.size = self.data.numel() * 4
        self.probes: list[float] = []  # every probe so far, bytes/s

    def __call__(self) -> float:
        import statistics
        import time

        import torch

        time.sleep(SETTLE_S)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            times = []
            for _ in range(self.repeats):
                start = time.perf_counter()
                self.data.sum()
                times.append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(previous)
        time.sleep(SETTLE_S)
        self.probes.append(self.size / statistics.median(times))
        return self.probes[-1]

    def summary(self) -> dict:
        import statistics

        p = self.probes
        return {"bandwidth_bytes_per_s": statistics.median(p) if p else None, "bandwidth_min_bytes_per_s": min(p, default=None),
                "bandwidth_max_bytes_per_s": max(p, default=None), "bandwidth_probes": len(p),
                "bandwidth_probe": f"median of {self.repeats} torch sums over {self.size >> 20} MiB, {self.threads} threads, "
                                   "before and after every timed decode run"}


def bound_fraction(bytes_per_step: int, step_s: float, bandwidth: float) -> float:
    """The share of `bandwidth` that reading `bytes_per_step` once per `step_s` uses."""
    return bytes_per_step / step_s / bandwidth
