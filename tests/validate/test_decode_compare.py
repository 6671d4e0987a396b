"""Decode steps: the rows a step writes are compared with the tolerances, the rows it carries over
must come back bit for bit. Checked with a runner that damages one kind of row on a real exported graph."""

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner

from ltexport.backends.ort.session import make_session
from ltexport.export.contract import INPUT_IDS, is_cache_output, past_name
from ltexport.hybrid.step import TorchStep
from ltexport.validate.compare import CARRIED, Tolerance, carried_rows, compare_backend
from tests.validate.conftest import PROMPT

TOL = Tolerance(1e-4, 1e-4)
SMALL = 1e-6  # inside the tolerance: only an exact check sees it


class Damaging(BaseRunner):
    """ONNX Runtime, then `damage(name, present, feed)` on every decode step's present caches."""

    def __init__(self, path, damage):
        super().__init__(name="damaged")
        self.inner = OnnxrtRunner(lambda: make_session(path), name="onnxruntime")
        self.damage = damage

    def activate_impl(self):
        self.inner.activate()

    def deactivate_impl(self):
        self.inner.deactivate()

    def get_input_metadata_impl(self):
        return self.inner.get_input_metadata(use_numpy_dtypes=False)

    def infer_impl(self, feed_dict):
        out = {name: np.array(value) for name, value in self.inner.infer(feed_dict).items()}
        if feed_dict[INPUT_IDS].shape[1] == 1:
            for name in out:
                if is_cache_output(name):
                    self.damage(name, out[name], feed_dict)
        return out


def checks(comparison):
    return {c.name: c for c in comparison.checks}


def test_carried_rows_are_all_but_the_written_one():
    past = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    ring = past.copy()
    ring[:, :, 2] = -1  # a lazy layer overwrites a slot
    grown = np.concatenate([past, np.ones((2, 3, 1, 2), np.float32)], axis=2)  # a full layer appends
    assert carried_rows(past, ring).tolist() == [True, True, False, True]
    assert carried_rows(past, grown).tolist() == [True, True, True, True, False]


def test_undamaged_graph_passes_with_carried_rows_exact(built):
    hybrid, path = built
    comparison = compare_backend(Damaging(path, lambda *a: None), TorchStep(hybrid), PROMPT, 8, TOL, greedy=False)
    found = checks(comparison)
    assert all(c.passed for c in comparison.checks)
    carried = found[f"decode/present ({CARRIED})"]
    assert carried.max_abs_diff == 0.0 and carried.atol == 0.0
    assert {"prefill/logits", "prefill/present", "decode/logits", "decode/present"} <= set(found)


def test_a_carried_row_changed_within_tolerance_fails(built):
    """A step that touches a row it should only copy (here the first, a sink row) is a wrong graph,
    however small the change."""
    hybrid, path = built

    def touch_first_row(name, present, feed):
        present[:, :, 0] += SMALL

    found = checks(compare_backend(Damaging(path, touch_first_row), TorchStep(hybrid), PROMPT, 8, TOL, greedy=False))
    carried = found[f"decode/present ({CARRIED})"]
    assert not carried.passed and 0 < carried.max_abs_diff < 1e-4
    assert found["decode/present"].passed  # the written rows are right


def test_a_written_row_beyond_tolerance_fails(built):
    hybrid, path = built

    def spoil_written(name, present, feed):
        past = feed[past_name(name)]
        present[:, :, ~carried_rows(past, present)] += 1.0

    found = checks(compare_backend(Damaging(path, spoil_written), TorchStep(hybrid), PROMPT, 8, TOL, greedy=False))
    assert not found["decode/present"].passed and found["decode/present"].max_abs_diff >= 1.0
    assert found[f"decode/present ({CARRIED})"].passed
