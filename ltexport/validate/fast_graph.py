"""Validation of the fast ONNX Runtime graph (model.ort.onnx) against the PyTorch reference.

The same Polygraphy comparison as model.onnx, with the same tolerances: FastRunner is a Polygraphy
runner that speaks model.onnx's contract (caches of past_len slots, rings of S+W) and runs the fast
graph underneath through FastStep (IOBinding, caches updated in place), so the reference's feeds
and outputs compare name for name. The free-running greedy check decodes with FastStep itself:
one set of caches, updated in place for every step, as generate, eval and bench run it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ltexport.export.contract import INPUT_IDS, LOGITS, ORT_MODEL_FILE, PAST_LEN, PRESENT_LEN, is_cache_input, present_name

RUNNER_NAME = "onnxruntime-fast"


def fast_runner(graph_dir: Path, threads: int | None = None):
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    from ltexport.backends.ort.fast import FastStep

    class FastRunner(BaseRunner):
        """model.ort.onnx behind model.onnx's I/O: feeds are imported into fast caches, presents
        exported back (full layers cut to past_len + T slots, rings without the scratch slot)."""

        def __init__(self):
            super().__init__(name=RUNNER_NAME)
            self.step = None

        def activate_impl(self):
            self.step = FastStep(Path(graph_dir) / ORT_MODEL_FILE, threads=threads)

        def deactivate_impl(self):
            self.step = None

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            meta.add(INPUT_IDS, np.int64, ["batch", "seq"])
            meta.add(PAST_LEN, np.int64, ["batch"])
            for info, lazy in zip(self.step.cache_inputs, self.step.lazy):
                _, heads, _, dim = info.shape
                meta.add(info.name, self.step.dtype, ["batch", heads, self.step.ring if lazy else "past_seq", dim])
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            names = [n for n in feed_dict if is_cache_input(n)]
            past = np.asarray(feed_dict[PAST_LEN], dtype=np.int64)
            ids = np.asarray(feed_dict[INPUT_IDS], dtype=np.int64)
            caches = self.step.import_caches([feed_dict[n] for n in names], past, int(past.max()) + ids.shape[1])
            logits, present_len, caches = self.step(ids, past, caches)
            presents = self.step.export_caches(caches, present_len)
            self.inference_time = time.perf_counter() - start
            out = OrderedDict([(LOGITS, logits), (PRESENT_LEN, present_len)])
            out.update((present_name(n), p) for n, p in zip(names, presents))
            return out

    return FastRunner()


def has_fast_graph(graph_dir: Path) -> bool:
    return (Path(graph_dir) / ORT_MODEL_FILE).is_file()


def fast_candidate(graph_dir: Path):
    """The fast graph as a validation candidate (ltexport.validate.compare.Candidate): compared through
    FastRunner, greedy-decoded in place by the runner's own FastStep (one session)."""
    from ltexport.validate.compare import Candidate

    return Candidate(fast_runner(graph_dir), greedy_step=lambda runner: runner.step)


def fast_section(comparison, graph: str) -> dict:
    """report.json's `ort_graph`: the fast graph's own checks and greedy result."""
    from ltexport.validate.compare import greedy_passed

    checks = [c.as_dict() for c in comparison.checks]
    passed = all(c["passed"] for c in checks) and greedy_passed(comparison.greedy)
    return {"graph": graph, "status": "pass" if passed else "fail", "checks": checks, "greedy": comparison.greedy}
