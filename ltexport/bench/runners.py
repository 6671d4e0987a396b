"""What a worker times, per engine: chunked prefill of one sequence, and N greedy decode steps.

Decode starts from caches of the right shapes filled with zeros at `context` cached tokens: the
cost of a step does not depend on cache values, and this keeps prefill (batch x context tokens)
out of the batch sweep. Each decode run has one untimed warm-up step first; `decode` returns the
time of every step, so a burst of load from other processes shows up as outliers, not as a mean.
"""

import json
import time
from pathlib import Path

import numpy as np

VOCAB_LOW = 100  # token ids for synthetic prompts: clear of special tokens


def _ids(rng, batch: int, length: int, vocab: int) -> np.ndarray:
    return rng.integers(VOCAB_LOW, vocab, size=(batch, length), dtype=np.int64)


class OrtRunner:
    """An exported graph under ONNX Runtime: the fast graph through FastStep (caches pre-allocated
    and updated in place through IOBinding), or model.onnx through OrtStep."""

    def __init__(self, spec: dict):
        from ltexport.backends.ort.fast import FastStep
        from ltexport.backends.ort.session import OrtStep

        fast = spec["onnx"].endswith(".ort.onnx")
        threads = spec.get("threads")
        self.step = FastStep(spec["onnx"], threads, num_logits=1) if fast else OrtStep(spec["onnx"], threads)
        self.vocab = spec["vocab_size"]
        self.rng = np.random.default_rng(0)
        self.info = {"engine": "onnxruntime (fast graph, IOBinding)" if fast else "onnxruntime (model.onnx)"}

    def device_memory(self) -> dict:
        return {}

    def caches(self, batch: int, context: int, room: int = 0):
        if hasattr(self.step, "import_caches"):  # FastStep: full layers sized for the whole run
            return self.step.empty_caches(batch, context + room)
        # Full-layer inputs come out of empty_caches with 0 positions; lazy rings have S+W.
        return [np.zeros(c.shape[:2] + (context,) + c.shape[3:], c.dtype) if c.shape[2] == 0 else
                np.zeros((batch,) + c.shape[1:], c.dtype) for c in self.step.empty_caches(batch)]

    def prefill(self, context: int, chunk: int) -> float:
        ids = _ids(self.rng, 1, context, self.vocab)
        caches, past = self.caches(1, 0, context), np.zeros(1, np.int64)
        start = time.perf_counter()
        for s in range(0, context, chunk):
            _, past, caches = self.step(ids[:, s:s + chunk], past, caches)
        return time.perf_counter() - start

    def decode(self, batch: int, context: int, steps: int) -> tuple[float, int]:
        caches = self.caches(batch, context, steps + 2)
        cache_bytes = sum(c.nbytes for c in caches)
        past = np.full(batch, context, np.int64)
        ids = _ids(self.rng, batch, 1, self.vocab)
        logits, past, caches = self.step(ids, past, caches)  # warm-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            ids = np.asarray(logits)[:, -1].argmax(-1)[:, None].astype(np.int64)
            logits, past, caches = self.step(ids, past, caches)
            times.append(time.perf_counter() - start)
        return times, cache_bytes


class GenaiRunner:
    """An onnxruntime-genai model (its builder's output) under its own runtime, batch 1: prefill is
    its append_tokens of the whole context, decode its generate_next_token loop."""

    def __init__(self, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(og.Config(spec["dir"]))
        config = json.loads((Path(spec["dir"]) / "genai_config.json").read_text())["model"]
        self.context_length = config["context_length"]
        decoder = config["decoder"]
        # its KV buffers: every layer, max_length slots (past and present share one buffer)
        self.slot_bytes = 2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"] * decoder["head_size"] * 4
        self.vocab = spec["vocab_size"]
        self.rng = np.random.default_rng(0)
        self.info = {"engine": f"onnxruntime-genai {getattr(og, '__version__', '')}".strip()}
        self._warm = None  # (context, generator) left by prefill for the decode of the same point

    def device_memory(self) -> dict:
        return {}

    def _generator(self, context: int, steps: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=min(context + steps + 2, self.context_length), do_sample=False, batch_size=1)
        return self.og.Generator(self.model, params)

    def prefill(self, context: int, chunk: int) -> float:
        """Its own prefill: one append_tokens call (chunk unused)."""
        gen = self._generator(context, 64)
        ids = _ids(self.rng, 1, context, self.vocab).astype(np.int32)
        start = time.perf_counter()
        gen.append_tokens(ids)
        elapsed = time.perf_counter() - start
        self._warm = (context, gen)
        return elapsed

    def decode(self, batch: int, context: int, steps: int) -> tuple[list[float], int]:
        if batch != 1:
            raise ValueError("the onnxruntime-genai peer runs batch 1 only")
        warm, self._warm = self._warm, None
        gen = warm[1] if warm and warm[0] == context else None
        if gen is None:
            gen = self._generator(context, steps)
            gen.append_tokens(_ids(self.rng, 1, context, self.vocab).astype(np.int32))
        gen.generate_next_token()  # warm-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            gen.generate_next_token()
            times.append(time.perf_counter() - start)
        return times, self.slot_bytes * (context + steps + 2)


class TorchRunner:
    """The PyTorch hybrid reference (HybridModel), on CUDA when present."""

    def __init__(self, spec: dict):
        import torch

        from ltexport.bench.bound import weight_bytes_read
        from ltexport.hybrid.model import HybridModel
        from ltexport.models.sources import resolve
        from ltexport.plan.schema import load_plan

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = resolve(spec["model"], trust_remote_code=spec["trust_remote_code"]).load_model("fp32").to(self.device)
        self.plan = load_plan(spec["plan"])
        self.hybrid = HybridModel(model, self.plan).eval()
        self.vocab = spec["vocab_size"]
        self.rng = np.random.default_rng(0)
        self.info = {"engine": f"torch ({self.device.type})", "weight_bytes": weight_bytes_read(model)}

    def device_memory(self) -> dict:
        if self.device.type != "cuda":
            return {}
        return {"cuda_peak_bytes": self.torch.cuda.max_memory_allocated()}

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def caches(self, batch: int, context: int):
        m, torch = self.plan.model, self.torch
        caches = []
        for layer in range(self.plan.num_layers):
            slots = self.plan.sink + self.plan.window if self.plan.is_lazy(layer) else context
            caches += [torch.zeros(batch, m["num_kv_heads"], slots, m["head_dim"], device=self.device) for _ in range(2)]
        return caches

    def _tensor(self, array):
        return self.torch.from_numpy(array).to(self.device)

    def prefill(self, context: int, chunk: int) -> float:
        with self.torch.no_grad():
            ids = self._tensor(_ids(self.rng, 1, context, self.vocab))
            caches, past = self.caches(1, 0), self.torch.zeros(1, dtype=self.torch.long, device=self.device)
            if self.device.type == "cuda":
                self.torch.cuda.reset_peak_memory_stats()
            self._sync()
            start = time.perf_counter()
            for s in range(0, context, chunk):
                _, past, *caches = self.hybrid(ids[:, s:s + chunk], past, *caches)
            self._sync()
            return time.perf_counter() - start

    def decode(self, batch: int, context: int, steps: int) -> tuple[float, int]:
        torch = self.torch
        with torch.no_grad():
            caches = self.caches(batch, context)
            cache_bytes = sum(c.numel() * c.element_size() for c in caches)
            past = torch.full((batch,), context, dtype=torch.long, device=self.device)
            logits, past, *caches = self.hybrid(self._tensor(_ids(self.rng, batch, 1, self.vocab)), past, *caches)
            times = []
            for _ in range(steps):
                self._sync()
                start = time.perf_counter()
                logits, past, *caches = self.hybrid(logits[:, -1:].argmax(-1), past, *caches)
                self._sync()
                times.append(time.perf_counter() - start)
            return times, cache_bytes


class HfRunner(TorchRunner):
    """transformers' own `generate` on the original model (its DynamicCache, its decode loop)."""

    def __init__(self, spec: dict):
        import torch

        from ltexport.bench.bound import weight_bytes_read
        from ltexport.models.sources import resolve

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = resolve(spec["model"], trust_remote_code=spec["trust_remote_code"]).load_model("fp32").to(self.device)
        self.vocab = spec["vocab_size"]
        self.rng = np.random.default_rng(0)
        self.info = {"engine": f"transformers generate ({self.device.type})", "weight_bytes": weight_bytes_read(self.model)}

    def _generate(self, ids, new_tokens: int, cache=None, clock=None):
        return self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), past_key_values=cache,
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=0, stopping_criteria=[clock] if clock else None)

    def cache(self, batch: int, context: int):
        from transformers import DynamicCache

        c = self.model.config
        heads = c.num_key_value_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        cache = DynamicCache()
        for layer in range(c.num_hidden_layers):
            zeros = [self.torch.zeros(batch, heads, context, head_dim, device=self.device) for _ in range(2)]
            cache.update(*zeros, layer)
        return cache

    def prefill(self, context: int, chunk: int) -> float:
        """generate's own prefill (one call, chunk unused) plus its first token."""
        with self.torch.no_grad():
            ids = self._tensor(_ids(self.rng, 1, context, self.vocab))
            self._sync()
            start = time.perf_counter()
            self._generate(ids, 1)
            self._sync()
            return time.perf_counter() - start

    def decode(self, batch: int, context: int, steps: int) -> tuple[float, int]:
        with self.torch.no_grad():
            ids = self._tensor(_ids(self.rng, batch, context + 1, self.vocab))
            self._generate(ids[:, -2:], 1, self.cache(batch, 1))  # warm-up on a tiny cache
            cache = self.cache(batch, context)
            cache_bytes = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
            clock = StepClock(self._sync)
            out = self._generate(ids, steps, cache, clock)  # only the last id is uncached: `steps` decode steps
        assert out.shape[1] == context + 1 + steps, out.shape
        return clock.step_times(), cache_bytes


class StepClock:
    """A stopping criterion that never stops: it timestamps every token `generate` produces."""

    def __init__(self, sync):
        self.sync = sync
        self.stamps = [time.perf_counter()]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.sync()
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]
