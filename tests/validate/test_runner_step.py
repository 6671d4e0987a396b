"""RunnerStep: any Polygraphy runner as a step function, the path TensorRT validation shares with ORT.

TensorRT is not installable here; these run the same wrapper over Polygraphy's OnnxrtRunner on a real
exported graph, plus the dtype casts a bf16 engine needs (checked on a recording runner: only the cast
is under test there, no engine is involved).
"""

from collections import OrderedDict

import numpy as np
import onnx
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from ltexport.backends.ort.session import OrtStep, make_session
from ltexport.generation import generate
from ltexport.hybrid.step import TorchStep
from ltexport.triton import add_sequence_start
from ltexport.validate.compare import Tolerance, compare_backend, greedy_passed
from ltexport.validate.runner_step import RunnerStep
from tests.validate.conftest import PROMPT


def ort_runner(path):
    return OnnxrtRunner(lambda: make_session(path), name="onnxruntime")


def test_step_matches_ort_step_over_ring_wraps(built):
    _, path = built
    direct = OrtStep(path)
    with ort_runner(path) as runner:
        step = RunnerStep(runner)
        ids, past = np.array([PROMPT]), np.zeros(1, dtype=np.int64)
        mine, theirs = step.empty_caches(1), direct.empty_caches(1)
        assert [c.shape for c in mine] == [c.shape for c in theirs]
        for _ in range(12):
            logits, past_mine, mine = step(ids, past, mine)
            ref_logits, past_ref, theirs = direct(ids, past, theirs)
            np.testing.assert_array_equal(logits, ref_logits)
            for a, b in zip(mine, theirs):
                np.testing.assert_array_equal(a, b)
            past, ids = past_mine, logits[:, -1].argmax(-1, keepdims=True)


def test_greedy_through_the_runner_matches_the_reference(built):
    hybrid, path = built
    with ort_runner(path) as runner:
        step = RunnerStep(runner)
        tokens = generate(step, step.empty_caches(1), PROMPT, 10)
    reference = TorchStep(hybrid)
    assert tokens == generate(reference, reference.empty_caches(1), PROMPT, 10)


def test_compare_backend_runs_greedy_for_any_runner(built):
    hybrid, path = built
    comparison = compare_backend(ort_runner(path), TorchStep(hybrid), PROMPT, 6, Tolerance(1e-4, 1e-4))
    assert comparison.greedy["steps"] == 7 and greedy_passed(comparison.greedy)
    assert all(check.passed for check in comparison.checks)


def test_triton_graph_gets_seq_start(built, tmp_path):
    """Graphs built for Triton (as TensorRT engines are) take seq_start; the step feeds 0."""
    hybrid, path = built
    model = onnx.load(str(path))
    plan = hybrid.plan
    full = [i for i in range(plan.num_layers) if not plan.is_lazy(i)]
    add_sequence_start(model, [f"past_key_values.{i}.{k}" for i in full for k in ("key", "value")])
    patched = tmp_path / "seq_start.onnx"
    onnx.save(model, str(patched))
    direct = OrtStep(path)
    with ort_runner(patched) as runner:
        step = RunnerStep(runner)
        assert "seq_start" in step.control
        got = step(np.array([PROMPT]), np.zeros(1, dtype=np.int64), step.empty_caches(1))
    want = direct(np.array([PROMPT]), np.zeros(1, dtype=np.int64), direct.empty_caches(1))
    np.testing.assert_array_equal(got[0], want[0])


class RecordingRunner:
    """Declares bf16 caches like a bf16 TensorRT engine; records what it is fed and echoes it back."""

    name = "recording"

    def __init__(self):
        self.fed = None
        self.meta = TensorMetadata()
        self.meta.add("input_ids", DataType.INT64, (-1, -1))
        self.meta.add("past_len", DataType.INT64, (-1,))
        self.meta.add("past_key_values.0.key", DataType.BFLOAT16, (-1, 2, 8, 4))
        self.meta.add("past_key_values.0.value", DataType.BFLOAT16, (-1, 2, -1, 4))

    def get_input_metadata(self, use_numpy_dtypes=True):
        return self.meta

    def infer(self, feed):
        self.fed = feed
        return OrderedDict(logits=feed["past_key_values.0.key"], present_len=feed["past_len"])


def test_bf16_inputs_go_as_torch_and_come_back_as_float32():
    runner = RecordingRunner()
    step = RunnerStep(runner)
    caches = step.empty_caches(3)
    assert [c.shape for c in caches] == [(3, 2, 8, 4), (3, 2, 0, 4)] and caches[0].dtype == np.float32
    key = np.full((3, 2, 8, 4), 1.00390625, dtype=np.float32)  # 1 + 2^-8: rounds to 1.0 in bfloat16
    out = step.infer({"input_ids": np.array([[1]]), "past_len": np.array([4], dtype=np.int32),
                      "past_key_values.0.key": key, "past_key_values.0.value": caches[1]})
    assert runner.fed["past_key_values.0.key"].dtype == torch.bfloat16
    assert runner.fed["past_len"].dtype == np.int64
    assert out["logits"].dtype == np.float32 and np.all(out["logits"] == 1.0)
