"""ONNX Runtime: the CPU fallback that runs the exported graph (local function bodies, no plugins)."""

import os
from pathlib import Path

import numpy as np

from ltexport.errors import LtexportError
from ltexport.export.contract import INPUT_IDS, PAST_LEN, is_cache_input
from ltexport.hybrid.caches import initial_cache_shape

# ONNX tensor element types -> numpy (bf16 caches are not runnable in ORT on CPU; fp32/fp16 are).
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def make_session(model_path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LtexportError(f"ONNX Runtime cannot load {model_path} ({line}); rebuild it with `ltexport build`") from None


class OrtStep:
    """One call of the exported graph: (input_ids, past_len, caches) -> (logits, present_len, caches)."""

    def __init__(self, model_path: Path, threads: int | None = None):
        self.session = make_session(model_path, threads)
        self.cache_inputs = [i for i in self.session.get_inputs() if is_cache_input(i.name)]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_caches(self, batch: int) -> list[np.ndarray]:
        caches = []
        for info in self.cache_inputs:
            if info.type not in _NP_TYPES:
                raise LtexportError(f"ONNX Runtime on CPU cannot run {info.type} caches; build with --dtype fp32 or fp16")
            caches.append(np.zeros(initial_cache_shape(info.shape, batch), dtype=_NP_TYPES[info.type]))
        return caches

    def feed(self, input_ids: np.ndarray, past_len: np.ndarray, caches: list[np.ndarray]) -> dict:
        feed = {INPUT_IDS: input_ids.astype(np.int64), PAST_LEN: past_len.astype(np.int64)}
        feed.update({info.name: c for info, c in zip(self.cache_inputs, caches)})
        return feed

    def __call__(self, input_ids, past_len, caches):
        logits, present_len, *presents = self.session.run(self.output_names, self.feed(input_ids, past_len, caches))
        return logits, present_len, presents
