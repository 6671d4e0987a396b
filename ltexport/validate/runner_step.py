"""An activated Polygraphy runner (ONNX Runtime or TensorRT) as a step function, so every backend gets
the same per-step comparison and the same free-running greedy check.

Feeds are numpy arrays as the PyTorch reference makes them (bfloat16 as float32: numpy has none). Each
is cast to the dtype the runner declares, bfloat16 as a torch tensor (what TrtRunner accepts for it),
and outputs come back as owned numpy arrays (bfloat16 as float32), since runners reuse output buffers.
"""

from __future__ import annotations

import numpy as np

from ltexport.export.contract import INPUT_IDS, LOGITS, PAST_LEN, PRESENT_LEN, SEQ_START, is_cache_input, present_name
from ltexport.hybrid.caches import initial_cache_shape


class RunnerStep:
    def __init__(self, runner):
        from polygraphy.datatype import DataType

        self.runner = runner
        self.metadata = runner.get_input_metadata(use_numpy_dtypes=False)
        self._datatype = DataType
        self.cache_names = [name for name in self.metadata if is_cache_input(name)]
        # Graphs built for Triton take `seq_start`; 0 = continue the sequence, it does not change outputs.
        self.control = {SEQ_START: np.zeros(1, dtype=np.int32)} if SEQ_START in self.metadata else {}

    def empty_caches(self, batch: int) -> list[np.ndarray]:
        caches = []
        for name in self.cache_names:
            meta = self.metadata[name]
            caches.append(np.zeros(initial_cache_shape(meta.shape, batch), dtype=self._host_dtype(meta.dtype)))
        return caches

    def infer(self, feed: dict) -> dict:
        """Named numpy inputs -> named numpy outputs."""
        feed = {**feed, **self.control}
        cast = {name: self._to_runner(value, self.metadata[name].dtype) for name, value in feed.items()}
        return {name: _to_host(value) for name, value in self.runner.infer(cast).items()}

    def __call__(self, input_ids, past_len, caches):
        out = self.infer({INPUT_IDS: input_ids, PAST_LEN: past_len, **dict(zip(self.cache_names, caches))})
        presents = [out[present_name(name)] for name in self.cache_names]
        return out[LOGITS], out[PRESENT_LEN], presents

    def _host_dtype(self, dtype):
        return np.float32 if dtype == self._datatype.BFLOAT16 else self._datatype.to_dtype(dtype, "numpy")

    def _to_runner(self, value, dtype):
        if dtype == self._datatype.BFLOAT16:
            import torch

            return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(torch.bfloat16)
        return np.ascontiguousarray(value, dtype=self._host_dtype(dtype))


def _to_host(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (TrtRunner returns those for torch feeds)
        import torch

        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy().copy()
    return np.array(value, copy=True)
