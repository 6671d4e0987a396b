"""The fast ONNX Runtime graph (model.ort.onnx) equals model.onnx and the PyTorch reference.

Per tiny architecture: the session's export (tests/export/conftest.py) and the same graph with its
nodes' `prefill` attribute switched and the function body folded again (all that differs between a dense and a
streaming export). A 40-token prompt wraps
the sink 2 + window 14 ring within one call (tokens superseded in the same call go to the scratch
slot), then 45 in-place decode steps wrap it again; a ragged batch decodes 40 steps with rows at
different lengths, plus a multi-token call that FastStep splits by row.
"""

from dataclasses import replace

import shutil

import numpy as np
import onnx
import pytest

from ltexport.backends.ort.fast import FastCaches, FastStep
from ltexport.backends.ort.session import OrtStep
from ltexport.errors import LtexportError
from ltexport.export.contract import DATA_FILE, DOMAIN, OP_TYPE
from ltexport.export.ort_lowering import lower
from ltexport.export.sink_window_onnx import finalize_model
from ltexport.hybrid.model import HybridModel
from ltexport.hybrid.step import TorchStep
from ltexport.models.sources import TINY_MODELS

TOL = 1e-4
PROMPT, STEPS = 40, 45


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def graphs(request, tiny_models, exported, tmp_path_factory):
    """(original model, {mode: (plan, model.onnx, fast graph)}) for one tiny architecture: the
    session's export, and the same graph with the other prefill mode."""
    _, model = tiny_models[request.param]
    hybrid, portable = exported[request.param]
    out = {}
    for plan in (hybrid.plan, replace(hybrid.plan, prefill="streaming" if hybrid.plan.prefill == "dense" else "dense")):
        directory = tmp_path_factory.mktemp(f"{request.param}-{plan.prefill}")
        path = portable if plan is hybrid.plan else _switch_mode(portable, plan.prefill, directory)
        out[plan.prefill] = (plan, path, lower(HybridModel(model, plan).eval(), path, path.parent / f"{plan.prefill}.ort.onnx"))
    return model, out


def _switch_mode(path, prefill, directory):
    """model.onnx with its SinkWindowAttention nodes switched to `prefill` and the local function folded
    again for it (all a re-export changes)."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            next(a for a in node.attribute if a.name == "prefill").s = prefill.encode()
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(kept)
    finalize_model(model, check=False)
    shutil.copy(path.parent / DATA_FILE, directory / DATA_FILE)  # tiny: a copy of the same weights
    path = directory / "model.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("mode", ["dense", "streaming"])
def test_fast_graph_matches_portable_and_reference_through_ring_wraps(graphs, mode):
    model, by_mode = graphs
    plan, portable, fast_path = by_mode[mode]
    reference, onnx_step, fast = TorchStep(HybridModel(model, plan)), OrtStep(portable), FastStep(fast_path)
    ids = np.random.default_rng(0).integers(3, 250, size=(1, PROMPT))
    caches = {"ref": reference.empty_caches(1), "onnx": onnx_step.empty_caches(1), "fast": fast.empty_caches(1, 8)}
    lengths = {k: np.zeros(1, np.int64) for k in caches}
    fast_caches, feed = caches["fast"], ids
    for _ in range(STEPS + 1):
        out = {}
        for name, run in (("ref", reference), ("onnx", onnx_step), ("fast", fast)):
            out[name], lengths[name], caches[name] = run(feed, lengths[name], caches[name])
        assert caches["fast"] is fast_caches  # updated in place, never replaced
        np.testing.assert_allclose(out["fast"], out["ref"], atol=TOL, rtol=TOL)
        np.testing.assert_allclose(out["fast"], out["onnx"], atol=TOL, rtol=TOL)
        feed = out["ref"][:, -1:].argmax(-1)  # all three get the reference's next token
    assert lengths["fast"].tolist() == lengths["ref"].tolist() == [PROMPT + STEPS]
    assert fast_caches.capacity >= PROMPT + STEPS  # grew from 8 slots
    for got, want in zip(fast.export_caches(fast_caches, lengths["fast"]), caches["ref"]):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def test_ragged_batch_decodes_like_each_row_alone(graphs):
    """Rows at different lengths in one batch give what each row gives alone (whose equality with
    the reference the test above shows): 40 decode steps, then a 3-token call split by row."""
    _, by_mode = graphs
    fast = FastStep(by_mode["dense"][2])
    rng = np.random.default_rng(1)
    rows = [fast(rng.integers(3, 250, size=(1, n)), np.zeros(1, np.int64), fast.empty_caches(1)) for n in (PROMPT, 23)]
    past = np.concatenate([r[1] for r in rows])
    exported = [fast.export_caches(r[2], r[1]) for r in rows]
    stacked = [np.concatenate([e[i] if lazy else _pad(e[i], int(past.max())) for e in exported])
               for i, lazy in enumerate(fast.lazy)]
    caches = fast.import_caches(stacked, past, int(past.max()) + 48)
    tokens = np.array([[int(r[0][0, -1].argmax())] for r in rows])
    for step in range(40 + 1):
        feed = tokens if step < 40 else rng.integers(3, 250, size=(2, 3))
        logits, past, caches = fast(feed, past, caches)
        for b, (_, row_past, row_caches) in enumerate(rows):
            row_logits, row_past, row_caches = fast(feed[b:b + 1], row_past, row_caches)
            rows[b] = (row_logits, row_past, row_caches)
            np.testing.assert_allclose(logits[b:b + 1], row_logits, atol=TOL, rtol=TOL)
        tokens = logits[:, -1:].argmax(-1)
    assert past.tolist() == [PROMPT + 43, 23 + 43]


def _pad(cache, length):
    """A full layer's [1,H,L,D] cache zero-padded to `length` slots (model.onnx's ragged layout)."""
    return np.pad(cache, ((0, 0), (0, 0), (0, length - cache.shape[2]), (0, 0)))


def test_num_logits_keeps_the_last_positions(graphs):
    _, by_mode = graphs
    _, _, fast_path = by_mode["streaming"]
    ids = np.random.default_rng(2).integers(3, 250, size=(1, 20))
    every, last = FastStep(fast_path), FastStep(fast_path, num_logits=1)
    full, _, _ = every(ids, np.zeros(1, np.int64), every.empty_caches(1))
    last, _, caches = last(ids, np.zeros(1, np.int64), last.empty_caches(1))
    assert last.shape == (1, 1, full.shape[2]) and isinstance(caches, FastCaches)
    np.testing.assert_allclose(last[0, 0], full[0, -1], atol=1e-6)


def test_fast_step_refuses_a_graph_that_is_not_one(graphs):
    _, by_mode = graphs
    with pytest.raises(LtexportError, match="not an ltexport ONNX Runtime graph"):
        FastStep(by_mode["dense"][1])
