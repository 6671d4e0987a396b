"""Variants under evaluation and the prefill/decode loop they share.

Every variant is a step function (input_ids [B,T], past_len [B], caches) -> (logits, present_len,
caches): the PyTorch hybrid reference (TorchStep) or a built ONNX graph (FastStep/OrtStep). The original
model is the hybrid with no lazy layers.

Prefill keeps memory bounded by chunks, without changing what is computed:
- dense prefill (LightTransfer-Test): lazy layers attend to the whole prompt, so every layer
  computes exactly what the original model computes. The prompt runs once through the original
  model (chunked, transformers' own cache) and its caches are transplanted: full layers keep all
  positions, lazy layers keep sink + the last `window` positions in their ring slots. Shared by all
  dense variants of one prompt.
- streaming prefill (LightTransfer-Train): chunks through the variant's own step; the op's mask
  (j < S or j > p - W) is exactly what each token would see, whatever the chunk size.
- prefill_chunk = 0: the prompt goes through the variant's step in one call (deployment's own
  prefill, memory O(prompt^2)). Also used for dense variants of models with their own sliding
  window shorter than the prompt (Mistral v0.1): the original masks beyond that window, the dense
  sink+window op does not, so the original's caches would not be the variant's.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch

from ltexport.plan.schema import Plan


@dataclass
class Variant:
    name: str
    plan: Plan
    step: object                  # prefill/decode as deployed
    view: object = None           # dense plans: same weights, chunks get decode-time attention (see view_plan)
    backend: str = "torch"
    origin: str | None = None     # plan file or build directory
    model_window: int | None = None  # the original model's own sliding window, if any

    @property
    def lazy_fraction(self) -> float:
        return len(self.plan.lazy_layers) / self.plan.num_layers

    @property
    def evicts_at(self) -> int:
        """Contexts above this drop tokens from lazy layers (no lazy layers: never)."""
        return self.plan.sink + self.plan.window if self.plan.lazy_layers else 10**12

    def describe(self) -> dict:
        return {"name": self.name, "backend": self.backend, "origin": self.origin,
                "lazy_fraction": round(self.lazy_fraction, 4),
                "requested_fraction": (self.plan.calibration or {}).get("lazy_fraction") if self.plan.lazy_layers else 0.0,
                "lazy_layers": self.plan.lazy_layers,
                "sink": self.plan.sink, "window": self.plan.window, "prefill": self.plan.prefill}


def torch_variant(name: str, model, plan: Plan, origin: str | None = None) -> Variant:
    from ltexport.hybrid.model import HybridModel
    from ltexport.hybrid.step import TorchStep

    step = TorchStep(HybridModel(model, plan))
    view = TorchStep(HybridModel(model, view_plan(plan))) if plan.prefill == "dense" else None
    windows = [w for w in step.hybrid.sliding_windows if w]
    return Variant(name, plan, step, view, origin=origin, model_window=min(windows, default=None))


def view_plan(plan: Plan) -> Plan:
    """A one-token decode step of a dense plan attends the S+W ring plus itself: sink + the last W+1
    positions. Streaming with window W+1 gives every token of a chunk exactly that (its ring layout
    differs, so its caches must be transplanted for it)."""
    return replace(plan, prefill="streaming", window=plan.window + 1)


def ort_variant(name: str, build_dir, plan: Plan, model_window: int | None = None) -> Variant:
    from ltexport.backends.ort.fast import ort_step

    step = ort_step(build_dir)
    # No view: a dense graph attends densely within a chunk, so it scores one token per call.
    return Variant(name, plan, step, backend="ort", origin=str(build_dir), model_window=model_window)


def genai_variant(name: str, model_dir, spec) -> Variant:
    """An onnxruntime-genai model directory (its builder's output), run by ONNX Runtime. Its plan
    only describes it: the layers its graph gives a local window are `lazy` with sink 0 and that
    window, prefilled through its own step (it never gets transplanted rings)."""
    from ltexport.bench.peers import GenaiGraphStep, genai_windows

    windows = genai_windows(model_dir)
    window = max(windows.values(), default=0)
    plan = Plan(model=spec.plan_header(), sink=0, window=window or 1, lazy_layers=sorted(windows), prefill="streaming")
    return Variant(name, plan, GenaiGraphStep(model_dir), backend="onnxruntime-genai", origin=str(model_dir))


class SharedPrefill:
    """The original model's chunked prefill of one prompt, computed on first use."""

    def __init__(self, model, ids: list[int], chunk: int):
        self.model, self.ids, self.chunk = model, ids, chunk
        self._result = None

    def get(self):
        if self._result is None:
            self._result = hf_prefill(self.model, self.ids, self.chunk)
        return self._result


@torch.no_grad()
def hf_prefill(model, ids: list[int], chunk: int):
    """(last-position logits [V] numpy, [(key, value)] per layer as [1,H,L,D] tensors)."""
    from transformers import DynamicCache

    cache = DynamicCache()  # no config: plain full layers, every position kept
    x = torch.tensor([ids])
    for start in range(0, len(ids), chunk):
        out = model(input_ids=x[:, start:start + chunk], past_key_values=cache, use_cache=True, logits_to_keep=1)
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    return out.logits[0, -1].float().numpy(), layers


def transplant(layers, plan: Plan, length: int, dtype) -> list[np.ndarray]:
    """Full caches of every layer -> the hybrid's flat cache list (lazy layers as rings)."""
    caches = []
    for i, (key, value) in enumerate(layers):
        for t in (key, value):
            t = t.float().numpy()[:, :, :length]
            caches.append((ring_from_full(t, plan.sink, plan.window) if plan.is_lazy(i) else t).astype(dtype))
    return caches


def ring_from_full(full: np.ndarray, sink: int, window: int) -> np.ndarray:
    """[B,H,L,D] -> [B,H,S+W,D]: position j < S in slot j, later ones in S + (j - S) mod W."""
    b, h, length, d = full.shape
    ring = np.zeros((b, h, sink + window, d), dtype=full.dtype)
    n_sink = min(sink, length)
    ring[:, :, :n_sink] = full[:, :, :n_sink]
    positions = np.arange(max(sink, length - window), length)
    ring[:, :, sink + (positions - sink) % window] = full[:, :, positions]
    return ring


def run_chunks(step, ids: list[int], past: int, caches, chunk: int, on_logits=None):
    """Feed `ids` (batch 1) from position `past` in chunks (0 = one call).
    Returns (last logits [V], past_len, caches); `on_logits(start, logits [T,V])` sees every chunk."""
    chunk = chunk or len(ids)
    past_len = np.array([past], dtype=np.int64)
    for start in range(0, len(ids), chunk):
        piece = np.array([ids[start:start + chunk]], dtype=np.int64)
        logits, past_len, caches = step(piece, past_len, caches)
        if on_logits is not None:
            on_logits(start, np.asarray(logits)[0])
    return np.asarray(logits)[0, -1], past_len, caches


def can_transplant(variant: Variant, length: int) -> bool:
    """Is the variant's dense prefill of `length` tokens exactly the original model's?"""
    if not variant.plan.lazy_layers:
        return True
    window_ok = variant.model_window is None or length <= variant.model_window
    return variant.plan.prefill == "dense" and window_ok


def prefill(variant: Variant, ids: list[int], chunk: int, shared: SharedPrefill):
    """The prompt as the variant's deployment would process it; (last logits, past_len, caches)."""
    if chunk > 0 and can_transplant(variant, len(ids)):
        logits, layers = shared.get()
        dtype = variant.step.empty_caches(1)[0].dtype
        return logits, np.array([len(ids)], dtype=np.int64), transplant(layers, variant.plan, len(ids), dtype)
    one_call = variant.plan.prefill == "dense"  # chunks would change what dense lazy layers see
    return run_chunks(variant.step, ids, 0, variant.step.empty_caches(1), 0 if one_call else chunk)


def greedy(step, logits, past_len, caches, max_new_tokens: int, eos_id: int | None) -> list[int]:
    tokens = []
    for i in range(max_new_tokens):
        token = int(np.argmax(logits))
        if token == eos_id:
            break
        tokens.append(token)
        if i + 1 < max_new_tokens:
            out, past_len, caches = step(np.array([[token]], dtype=np.int64), past_len, caches)
            logits = np.asarray(out)[0, -1]
    return tokens
