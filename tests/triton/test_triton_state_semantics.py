"""Run the packaged graph the way Triton's implicit state feeds it (triton_synth.EmulatedTriton)
and compare with the build's own graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from triton_synth import HD, KV, SINK, WINDOW, EmulatedTriton, make_build, make_model, parse_config

from ltexport.triton import add_sequence_start, package_triton

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] parses config.pbtxt with Triton's schema")
import tritonclient.grpc as grpcclient  # noqa: E402

LAZY = (1, 3)


def reference_run(model_path, requests):
    """The build's own graph from an empty sequence: past_len 0, full caches with 0 rows."""
    sess = ort.InferenceSession(str(model_path))
    feeds = {"past_len": np.zeros(1, np.int64)}
    for i in range(4):
        rows = SINK + WINDOW if i in LAZY else 0
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, KV, rows, HD), np.float32)
    names = [o.name for o in sess.get_outputs()]
    logits = []
    for ids in requests:
        outs = dict(zip(names, sess.run(None, {**feeds, "input_ids": np.array([ids], np.int64)})))
        logits.append(outs["logits"])
        feeds["past_len"] = outs["present_len"]
        for i in range(4):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = outs[f"present.{i}.{kind}"]
    return logits


def triton_like_run(cfg, model_path, requests, fill=0.0):
    server = EmulatedTriton(cfg, model_path, fill=fill)
    logits = []
    for k, ids in enumerate(requests):
        x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
        x.set_data_from_numpy(np.array([ids], np.int64))
        logits.append(server.infer(cfg.name, [x], sequence_id=9, sequence_start=k == 0).as_numpy("logits"))
    return logits, server.states[9]


@pytest.mark.parametrize("fill", [0.0, 7.0])
def test_triton_state_protocol_reproduces_the_build(tmp_path, fill):
    out = make_build(tmp_path / "out", lazy=LAZY)
    pkg = package_triton(out, tmp_path / "repo")
    cfg = parse_config(pkg.config)
    requests = [[1, 2, 3], [4], [5], [6, 7]]
    want = reference_run(out / "model.onnx", requests)
    got, states = triton_like_run(cfg, pkg.path / "1" / "model.onnx", requests, fill=fill)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)
    assert states["past_len"].tolist() == [7]
    assert states["past_key_values.0.key"].shape == (1, KV, 7, HD)
    assert states["past_key_values.1.key"].shape == (1, KV, SINK + WINDOW, HD)


def test_seq_start_zero_is_the_identity(tmp_path):
    """With seq_start = 0 the modified graph computes exactly the original on any state."""
    model = make_model(lazy=LAZY)
    original = ort.InferenceSession(model.SerializeToString())
    modified = make_model(lazy=LAZY)
    add_sequence_start(modified, [f"past_key_values.{i}.{k}" for i in (0, 2) for k in ("key", "value")])
    onnx.checker.check_model(modified)
    patched = ort.InferenceSession(modified.SerializeToString())
    rng = np.random.default_rng(1)
    feeds = {"input_ids": np.array([[3, 4]], np.int64), "past_len": np.array([5], np.int64)}
    for i in range(4):
        rows = SINK + WINDOW if i in LAZY else 5
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = rng.standard_normal((1, KV, rows, HD)).astype(np.float32)
    want = original.run(None, feeds)
    got = patched.run(None, {**feeds, "seq_start": np.array([0], np.int32)})
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)
    # seq_start = 1: past_len and the full caches are dropped, present_len counts only new tokens
    started = dict(zip([o.name for o in patched.get_outputs()],
                       patched.run(None, {**feeds, "seq_start": np.array([1], np.int32)})))
    assert started["present_len"].tolist() == [2]
    assert started["present.0.key"].shape == (1, KV, 2, HD)
