"""The fast ONNX Runtime graph (model.ort.onnx) as a step function that never copies its caches.

Caches live in numpy buffers wrapped as OrtValues (same memory). Every present output is bound to
its past input through IOBinding, so ONNX Runtime updates them in place: GroupQueryAttention
writes the new tokens of a full layer at past_len[b] of its static buffer, ScatterND writes a lazy
layer's new tokens into their ring slots. A call moves only the new tokens, the logits and
past_len. Layouts: ltexport.export.contract (ORT_MODEL_FILE and below).

Same interface as OrtStep: step(input_ids [B,T], past_len [B], caches) -> (logits, present_len,
caches). `caches` is a FastCaches (from empty_caches), or a list of numpy arrays in model.onnx's
layout (imported once, e.g. caches transplanted from the original model); the FastCaches that
comes back is the same object, updated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltexport.backends.ort.session import make_session
from ltexport.errors import LtexportError
from ltexport.export.contract import (
    INPUT_IDS, LOGITS, NUM_LOGITS, ORT_GRAPH_KEY, PAST_LEN, PRESENT_LEN, RING_SCRATCH, is_cache_input, present_name,
)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
INITIAL_CAPACITY = 256


@dataclass
class FastCaches:
    """Flat [key_0, value_0, ...] buffers in the fast layout; full layers hold `capacity` slots."""

    arrays: list[np.ndarray]
    capacity: int
    values: list = None  # OrtValues over `arrays`

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.arrays[index]

    def __iter__(self):
        return iter(self.arrays)


class FastStep:
    def __init__(self, model_path: Path, threads: int | None = None, num_logits: int = 0):
        """num_logits: logits of the last N positions of each call only (0: all; 1 is all a decode
        loop reads, and spares prefill the LM head over every prompt token)."""
        import onnxruntime as ort

        self._ort = ort
        self.session = make_session(model_path, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        if ORT_GRAPH_KEY not in props:
            raise LtexportError(f"{model_path} is not an ltexport ONNX Runtime graph; rebuild it with `ltexport build`")
        self.meta = json.loads(props[ORT_GRAPH_KEY])
        self.cache_inputs = [i for i in self.session.get_inputs() if is_cache_input(i.name)]
        self.vocab = self.session.get_outputs()[0].shape[-1]
        if self.cache_inputs[0].type not in _NP_TYPES:
            raise LtexportError(f"ONNX Runtime on CPU cannot run {self.cache_inputs[0].type} caches; build with --dtype fp32 or fp16")
        self.dtype = _NP_TYPES[self.cache_inputs[0].type]
        self.lazy = [int(i.name.split(".")[1]) in self.meta["lazy_layers"] for i in self.cache_inputs]
        self.ring = self.meta["sink"] + self.meta["window"]
        self.max_positions = self.meta["max_positions"]
        self.min_capacity = self.meta.get("min_capacity", 0)
        self.num_logits = np.array([num_logits], dtype=np.int64)
        self._binding = None  # (caches, IOBinding bound to them)
        self._outputs = {}  # (batch, logit rows) -> pre-allocated (logits, present_len) buffers

    # ---------------------------------------------------------------- caches

    def empty_caches(self, batch: int, capacity: int = INITIAL_CAPACITY) -> FastCaches:
        capacity = min(max(capacity, self.min_capacity, 1), self.max_positions)
        arrays = [np.zeros(self._shape(info, lazy, batch, capacity), self.dtype)
                  for info, lazy in zip(self.cache_inputs, self.lazy)]
        return self._wrap(arrays, capacity)

    def import_caches(self, caches: list[np.ndarray], past_len: np.ndarray, capacity: int = 0) -> FastCaches:
        """Caches in model.onnx's layout (full: slot j holds position j < past_len[b]; lazy: the S+W
        ring) -> a FastCaches of at least `capacity` full-layer slots."""
        batch = caches[0].shape[0]
        fast = self.empty_caches(batch, max(capacity, int(np.max(past_len, initial=0)) + 1))
        for dst, src, lazy in zip(fast.arrays, caches, self.lazy):
            if lazy:
                dst[:, :, :self.ring] = src
            else:
                for b, length in enumerate(np.asarray(past_len).tolist()):
                    dst[b, :, :length] = src[b, :, :length]
        return fast

    def export_caches(self, caches: FastCaches, past_len: np.ndarray) -> list[np.ndarray]:
        """The inverse of import_caches: full layers cut to max(past_len) slots, rings without scratch."""
        length = int(np.max(past_len, initial=0))
        return [a[:, :, :self.ring].copy() if lazy else a[:, :, :length].copy()
                for a, lazy in zip(caches.arrays, self.lazy)]

    # ---------------------------------------------------------------- a call

    def __call__(self, input_ids, past_len, caches):
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        past = np.ascontiguousarray(past_len, dtype=np.int64)
        if not isinstance(caches, FastCaches):
            caches = self.import_caches(caches, past)
        self._ensure_capacity(caches, int(past.max()) + ids.shape[1])
        if ids.shape[0] > 1 and ids.shape[1] > 1 and past.max() > 0:
            return self._by_row(ids, past, caches)  # GroupQueryAttention: T > 1 after a past needs batch 1
        logits = self._run(ids, past, caches)
        return logits, past + ids.shape[1], caches

    def _run(self, ids: np.ndarray, past: np.ndarray, caches: FastCaches) -> np.ndarray:
        io = self._bind(caches)
        io.bind_cpu_input(INPUT_IDS, ids)
        io.bind_cpu_input(PAST_LEN, past)
        logits = self._bind_outputs(io, ids.shape)
        self.session.run_with_iobinding(io)
        return logits.copy()

    def _bind_outputs(self, io, shape) -> np.ndarray:
        """Logits and present_len into buffers kept per call shape (decode reuses one pair)."""
        rows = shape[1] if not self.num_logits[0] else min(shape[1], int(self.num_logits[0]))
        key = (shape[0], rows)
        if key not in self._outputs:
            logits = np.empty((shape[0], rows, self.vocab), self.dtype)
            present = np.empty(shape[0], np.int64)
            self._outputs[key] = (logits, self._ort.OrtValue.ortvalue_from_numpy(logits), present,
                                  self._ort.OrtValue.ortvalue_from_numpy(present))
        logits, logits_value, _, present_value = self._outputs[key]
        io.bind_ortvalue_output(LOGITS, logits_value)
        io.bind_ortvalue_output(PRESENT_LEN, present_value)
        return logits

    def _by_row(self, ids, past, caches: FastCaches):
        rows = []
        for b in range(ids.shape[0]):
            row = self._wrap([a[b:b + 1] for a in caches.arrays], caches.capacity)
            rows.append(self._run(ids[b:b + 1], past[b:b + 1], row))
        self._binding = None
        return np.concatenate(rows), past + ids.shape[1], caches

    def _bind(self, caches: FastCaches):
        if self._binding is None or self._binding[0] is not caches:
            io = self.session.io_binding()
            io.bind_cpu_input(NUM_LOGITS, self.num_logits)
            for info, value in zip(self.cache_inputs, caches.values):
                io.bind_ortvalue_input(info.name, value)
                io.bind_ortvalue_output(present_name(info.name), value)  # the present is the past, in place
            self._binding = (caches, io)
        return self._binding[1]

    def _ensure_capacity(self, caches: FastCaches, needed: int) -> None:
        if needed <= caches.capacity:
            return
        if needed > self.max_positions:
            raise LtexportError(f"the context would reach {needed} tokens but the model has {self.max_positions} "
                                "positions; shorten the prompt or the number of new tokens")
        capacity = min(max(needed, 2 * caches.capacity), self.max_positions)
        grown = []
        for a, lazy in zip(caches.arrays, self.lazy):
            if lazy:
                grown.append(a)
                continue
            b = np.zeros(a.shape[:2] + (capacity,) + a.shape[3:], a.dtype)
            b[:, :, :caches.capacity] = a
            grown.append(b)
        new = self._wrap(grown, capacity)
        caches.arrays, caches.capacity, caches.values = new.arrays, new.capacity, new.values
        self._binding = None

    def _wrap(self, arrays: list[np.ndarray], capacity: int) -> FastCaches:
        values = [self._ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        return FastCaches(arrays, capacity, values)

    def _shape(self, info, lazy: bool, batch: int, capacity: int) -> tuple:
        _, heads, _, dim = info.shape
        return (batch, heads, self.ring + RING_SCRATCH if lazy else capacity, dim)


def ort_step(build_dir: Path, threads: int | None = None, num_logits: int = 0):
    """The step function ONNX Runtime runs for a build: FastStep on model.ort.onnx where the build
    has it, else OrtStep on model.onnx (builds made before the fast graph existed)."""
    from ltexport.backends.ort.session import OrtStep
    from ltexport.export.contract import MODEL_FILE, ORT_MODEL_FILE

    fast = Path(build_dir) / ORT_MODEL_FILE
    return FastStep(fast, threads, num_logits) if fast.is_file() else OrtStep(Path(build_dir) / MODEL_FILE, threads)
