"""`ltexport package --runtime python` without a server: the files, the config (Triton's own schema),
and the per-sequence cache store the model runs inside Triton (over ONNX Runtime on a synthetic build)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_triton_cli_and_client import assert_one_line_error, reference_greedy
from triton_synth import VOCAB, make_build, parse_config, tree

from ltexport.backends.ort.session import OrtStep
from ltexport.cli import main
from ltexport.triton import package_triton
from ltexport.triton.package import MODEL_PY
from ltexport.triton.python_model import control_names, idle_timeout_s
from ltexport.triton.sequences import SequenceCaches, SequenceError

pytest.importorskip("tritonclient.grpc")  # parse_config uses Triton's ModelConfig schema


def package(tmp_path, **kw):
    out = make_build(tmp_path / "out", **{k: kw.pop(k) for k in ("backend", "dtype") if k in kw})
    return out, package_triton(out, tmp_path / "repo", name="hybrid", runtime="python", **kw)


def test_files_and_config(tmp_path):
    out, pkg = package(tmp_path, instances=2, max_sequences=3, max_sequence_idle_us=2_500_000)
    files = tree(pkg.path)
    assert set(files) == {"config.pbtxt", "README.md", "ltexport.json", "1/model.py", "1/build.json",
                          "1/model.onnx", "1/model.onnx.data"}
    # the build's own graph, byte for byte (no seq_start: the model keeps the caches itself)
    assert files["1/model.onnx"] == (out / "model.onnx").read_bytes()
    assert files["1/model.py"].decode() == MODEL_PY
    assert json.loads(files["ltexport.json"])["runtime"] == "python"

    cfg = parse_config(pkg.config)
    assert cfg.backend == "python" and cfg.max_batch_size == 1
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("input_ids", [-1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("logits", [-1, VOCAB])]
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences == 3
    assert sb.max_sequence_idle_microseconds == 2_500_000 and not sb.state
    assert cfg.instance_group[0].count == 2 and cfg.parameters["ltexport_backend"].string_value == "auto"

    # what the model reads from it (Triton hands model.py the config as JSON, defaults included)
    from google.protobuf import json_format

    as_json = json_format.MessageToDict(cfg, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    assert control_names(as_json) == {"CONTROL_SEQUENCE_START": "START", "CONTROL_SEQUENCE_END": "END",
                                      "CONTROL_SEQUENCE_CORRID": "CORRID"}
    assert idle_timeout_s(as_json) == 2.5
    readme = files["README.md"].decode()
    assert f"ltexport serve {tmp_path / 'repo'}" in readme and "ltexport_sequences_held" in readme
    assert "ltexport serve" in (tmp_path / "repo" / "README.md").read_text()


def test_tensorrt_build_ships_the_engine_and_needs_no_seq_start(tmp_path):
    # a TensorRT build without seq_start is refused by the implicit-state flavour, not here
    _, pkg = package(tmp_path, backend="trt")
    files = set(tree(pkg.path))
    assert {"1/model.plan", "1/libltexport_trt_plugin.so", "1/model.onnx", "1/build.json"} <= files
    assert parse_config(pkg.config).instance_group[0].kind == 1  # KIND_GPU


def test_repackage_is_unchanged_and_flavours_differ(tmp_path):
    out, first = package(tmp_path)
    assert package_triton(out, tmp_path / "repo", name="hybrid", runtime="python").changed is False
    with pytest.raises(Exception, match="already holds a different model"):
        package_triton(out, tmp_path / "repo", name="hybrid")  # the implicit-state flavour


def test_cli_errors(tmp_path):
    out = make_build(tmp_path / "out")
    run = CliRunner().invoke
    result = run(main, ["package", str(out), "--triton", str(tmp_path / "repo"), "--max-sequences", "2"])
    assert_one_line_error(result, "--max-sequences applies to --runtime python")
    (out / "build.json").unlink()
    result = run(main, ["package", str(out), "--triton", str(tmp_path / "repo"), "--runtime", "python"])
    assert_one_line_error(result, "is not an ltexport build directory (no build.json)")
    assert not (tmp_path / "repo").exists()


def test_model_py_imports_ltexport_model():
    namespace: dict = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)  # what Triton's stub does with the file
    from ltexport.triton.python_model import TritonPythonModel

    assert namespace["TritonPythonModel"] is TritonPythonModel


# --- the store the model runs: caches per correlation id ----------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    return OrtStep(make_build(tmp_path_factory.mktemp("synth") / "out") / "model.onnx")


def greedy(caches, corrid, prompt, n, end_at_last=True):
    """Run one sequence's requests; returns the tokens (the last request carries END)."""
    ids, out = prompt, []
    for k in range(n):
        logits = caches.run(corrid, np.array([ids], np.int64), start=k == 0, end=end_at_last and k == n - 1)
        out.append(int(np.argmax(logits[0, -1])))
        ids = [out[-1]]
    return out


def test_interleaved_sequences_each_get_their_own_caches(step, tmp_path):
    caches = SequenceCaches(step, idle_timeout_s=10, vocab=VOCAB)
    a, b = [1, 2, 3], [7, 5]
    tokens = {11: [], 12: []}
    ids = {11: a, 12: b}
    for k in range(5):
        for cid in (11, 12):
            logits = caches.run(cid, np.array([ids[cid]], np.int64), start=k == 0, end=k == 4)
            tokens[cid].append(int(np.argmax(logits[0, -1])))
            ids[cid] = [tokens[cid][-1]]
        assert caches.held == (2 if k < 4 else 0)
    model = make_build(tmp_path / "ref") / "model.onnx"
    assert tokens[11] == reference_greedy(model, a, 5) and tokens[12] == reference_greedy(model, b, 5)
    assert tokens[11] != tokens[12]
    assert caches.held_bytes == 0


def test_requests_of_unknown_or_ended_sequences_are_refused(step):
    caches = SequenceCaches(step, idle_timeout_s=10, vocab=VOCAB)
    with pytest.raises(SequenceError, match="sequence 5 is unknown .* sequence_start=True"):
        caches.run(5, np.array([[1]], np.int64), start=False, end=False)
    greedy(caches, 6, [1, 2], 2)
    with pytest.raises(SequenceError, match="sequence 6 has ended"):
        caches.run(6, np.array([[1]], np.int64), start=False, end=False)
    assert len(greedy(caches, 6, [1, 2], 2)) == 2  # the same id may start again


def test_idle_sequences_are_swept(step):
    clock = Clock()
    caches = SequenceCaches(step, idle_timeout_s=2.0, vocab=VOCAB, clock=clock)
    greedy(caches, 1, [1, 2], 2, end_at_last=False)
    clock.now = 1.5
    greedy(caches, 2, [3], 1, end_at_last=False)
    assert caches.held == 2 and caches.held_bytes > 0
    clock.now = 2.1  # only sequence 1 has been idle for more than 2 s
    assert caches.sweep() == [1] and caches.held == 1
    with pytest.raises(SequenceError, match="sequence 1 was idle for more than 2 s"):
        caches.run(1, np.array([[1]], np.int64), start=False, end=False)
    clock.now = 10
    assert caches.sweep() == [2] and caches.held == 0 and caches.held_bytes == 0


@pytest.mark.parametrize("ids", [np.zeros((1, 0), np.int64), np.zeros((2, 1), np.int64), np.array([[VOCAB]]),
                                 np.array([[-1]]), np.array([[1.0]])])
def test_bad_input_ids_are_refused(step, ids):
    caches = SequenceCaches(step, idle_timeout_s=10, vocab=VOCAB)
    with pytest.raises(SequenceError, match="input_ids must be|token ids must lie"):
        caches.run(3, ids, start=True, end=False)
    assert caches.held == 0
