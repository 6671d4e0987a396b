"""ltexport.triton.package_triton on synthetic builds: configs against the real Triton schema and graph."""

import json
import os
from pathlib import Path

import onnx
import pytest
from triton_synth import HD, KV, SINK, WINDOW, check_config_against_graph, make_build, parse_config, tree

from ltexport.errors import LtexportError
from ltexport.triton import package_triton, read_build

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] parses config.pbtxt with Triton's schema")
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_ort_package_matches_graph(tmp_path, dtype):
    out = make_build(tmp_path / "out", dtype=dtype)
    pkg = package_triton(out, tmp_path / "repo", name="hybrid", version=3)
    assert pkg.changed and pkg.path == (tmp_path / "repo" / "hybrid").resolve()

    cfg = parse_config(pkg.config)
    assert cfg.name == "hybrid" and cfg.backend == "onnxruntime" and not cfg.platform
    assert cfg.default_model_filename == "model.onnx"
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    assert cfg.sequence_batching.HasField("direct")

    vdir = pkg.path / "3"
    assert sorted(p.name for p in vdir.iterdir()) == ["model.onnx", "model.onnx.data"]
    model = onnx.load(str(vdir / "model.onnx"), load_external_data=False)
    check_config_against_graph(cfg, model)
    onnx.load(str(vdir / "model.onnx"))  # its external data resolves inside the version dir

    states = {s.input_name: s for s in cfg.sequence_batching.state}
    ctype = "TYPE_FP16" if dtype == "fp16" else "TYPE_FP32"
    assert len(states) == 1 + 2 * 4
    assert list(states["past_len"].dims) == [1] and states["past_len"].output_name == "present_len"
    for i in range(4):
        for kind in ("key", "value"):
            st = states[f"past_key_values.{i}.{kind}"]
            assert st.output_name == f"present.{i}.{kind}"
            assert mc.DataType.Name(st.data_type) == ctype
            seq = SINK + WINDOW if i in (1, 3) else -1
            assert list(st.dims) == [1, KV, seq, HD]
            assert list(st.initial_state[0].dims) == [1, KV, seq if seq > 0 else 1, HD]
    assert [c.name for c in cfg.sequence_batching.control_input] == ["seq_start"]
    assert [t.name for t in cfg.input] == ["input_ids"]
    manifest = json.loads((pkg.path / "ltexport.json").read_text())
    assert manifest["backend"] == "ort" and manifest["model_version"] == 3
    assert "tritonserver --model-repository=" in (tmp_path / "repo" / "README.md").read_text()


def test_gpu_flag_and_options(tmp_path):
    out = make_build(tmp_path / "out")
    pkg = package_triton(out, tmp_path / "repo", gpu=True, instances=3, max_sequence_idle_us=123)
    cfg = parse_config(pkg.config)
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 3)]
    assert cfg.sequence_batching.max_sequence_idle_microseconds == 123


def test_all_lazy_and_symbolic_kv_heads(tmp_path):
    # kv_heads symbolic in the graph: the config takes it from plan.json
    out = make_build(tmp_path / "out", num_layers=2, lazy=(0, 1), kv_symbolic=True)
    pkg = package_triton(out, tmp_path / "repo")
    cfg = parse_config(pkg.config)
    for st in cfg.sequence_batching.state:
        if st.input_name != "past_len":
            assert list(st.dims) == [1, KV, SINK + WINDOW, HD]


def test_trt_package(tmp_path):
    out = make_build(tmp_path / "out", backend="trt", dtype="fp16", with_seq_start=True)
    pkg = package_triton(out, tmp_path / "repo", name="trt_model")
    cfg = parse_config(pkg.config)
    assert cfg.platform == "tensorrt_plan" and not cfg.backend
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    check_config_against_graph(cfg, onnx.load(str(out / "model.onnx"), load_external_data=False))
    vdir = pkg.path / "1"
    assert sorted(p.name for p in vdir.iterdir()) == ["libltexport_trt_plugin.so", "model.plan"]
    assert (vdir / "model.plan").read_bytes() == (out / "model.plan").read_bytes()
    plugin = vdir / "libltexport_trt_plugin.so"
    for readme in (tmp_path / "repo" / "README.md", pkg.path / "README.md"):
        text = readme.read_text()
        assert f"--model-repository={tmp_path.resolve() / 'repo'}" in text
        assert f"--backend-config=tensorrt,plugins={plugin}" in text


def test_trt_without_plan_is_an_error(tmp_path):
    out = make_build(tmp_path / "out", backend="trt", with_plan_file=False, with_seq_start=True)
    with pytest.raises(LtexportError, match="TensorRT build without model.plan"):
        package_triton(out, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_trt_with_full_layers_needs_seq_start(tmp_path):
    out = make_build(tmp_path / "out", backend="trt")
    with pytest.raises(LtexportError, match="no 'seq_start' input"):
        package_triton(out, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_trt_without_plugin_is_an_error(tmp_path):
    out = make_build(tmp_path / "out", backend="trt", with_plugin=False, with_seq_start=True)
    with pytest.raises(LtexportError, match="libltexport_trt_plugin.so is missing"):
        package_triton(out, tmp_path / "repo")


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "..", ".", ".hidden", "-x", "../escape", "/abs", "a b", "x" * 129])
def test_bad_names_fail_and_leave_nothing(tmp_path, name):
    out = make_build(tmp_path / "out")
    with pytest.raises(LtexportError, match="invalid model name") as err:
        package_triton(out, tmp_path / "repo", name=name)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "repo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("version", [0, -1, True, "1"])
def test_bad_versions(tmp_path, version):
    with pytest.raises(LtexportError, match="invalid model version"):
        package_triton(make_build(tmp_path / "out"), tmp_path / "repo", version=version)


def test_repackaging_identical_build_is_a_no_op(tmp_path):
    out = make_build(tmp_path / "out")
    repo = tmp_path / "repo"
    first = package_triton(out, repo)
    before = tree(repo)
    mtime = os.stat(first.path / "1" / "model.onnx.data").st_mtime_ns
    again = package_triton(out, repo)
    assert not again.changed and again.path == first.path
    assert tree(repo) == before
    assert os.stat(first.path / "1" / "model.onnx.data").st_mtime_ns == mtime


@pytest.mark.parametrize("change", ["other_weights", "other_version", "other_options", "stray_file"])
def test_name_holding_a_different_model_is_refused(tmp_path, change):
    repo = tmp_path / "repo"
    package_triton(make_build(tmp_path / "out"), repo)
    before = tree(repo)
    kwargs = {}
    out = tmp_path / "out"
    if change == "other_weights":
        out = make_build(tmp_path / "out2", dtype="fp16")
    elif change == "other_version":
        kwargs["version"] = 2
    elif change == "other_options":
        kwargs["gpu"] = True
    else:
        (repo / "ltexport" / "notes.txt").write_text("mine")
        before = tree(repo)
    with pytest.raises(LtexportError, match="already holds a different model") as err:
        package_triton(out, repo, **kwargs)
    assert "\n" not in str(err.value)
    assert tree(repo) == before
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging left


def test_second_model_in_same_repo_and_foreign_readme(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("my own notes\n")
    a = package_triton(make_build(tmp_path / "a"), repo, name="a")
    assert a.notes and "left as it is" in a.notes[0]
    assert (repo / "README.md").read_text() == "my own notes\n"
    (repo / "README.md").unlink()
    package_triton(make_build(tmp_path / "b", dtype="fp16"), repo, name="b")
    text = (repo / "README.md").read_text()
    assert "`a` (version 1, ort)" in text and "`b` (version 1, ort)" in text


def test_empty_target_dir_is_filled(tmp_path):
    (tmp_path / "repo" / "ltexport").mkdir(parents=True)
    pkg = package_triton(make_build(tmp_path / "out"), tmp_path / "repo")
    assert (pkg.path / "config.pbtxt").is_file()


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import ltexport.triton.package as package

    out = make_build(tmp_path / "out")

    def boom(stage, files):
        (stage / "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(package, "_write", boom)
    with pytest.raises(OSError, match="disk full"):
        package_triton(out, tmp_path / "deep" / "repo")
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda out: (out / "report.json").unlink(), "report.json is missing"),
        (lambda out: (out / "plan.json").write_text("{"), "plan.json is not valid JSON"),
        (lambda out: (out / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda out: (out / "model.onnx.data").unlink(), "external data of model.onnx"),
        (lambda out: (out / "model.onnx").write_bytes(b"not onnx"), "cannot read"),
        (lambda out: (out / "report.json").write_text(json.dumps({"status": "fail", "backend": "ort"})),
         "status 'fail'"),
        (lambda out: (out / "plan.json").write_text(json.dumps(
            {"format": "ltexport-plan", "version": 1, "sink": SINK, "window": WINDOW, "lazy_layers": [0, 1],
             "model": {"num_layers": 4, "num_kv_heads": KV, "head_dim": HD}})), "inconsistent"),
        (lambda out: (out / "plan.json").write_text(json.dumps(
            {"format": "ltexport-plan", "version": 1, "sink": SINK, "window": WINDOW + 1, "lazy_layers": [1, 3],
             "model": {"num_layers": 4, "num_kv_heads": KV, "head_dim": HD}})), "not sink\\+window"),
        (lambda out: (out / "plan.json").write_text(json.dumps(
            {"format": "ltexport-plan", "version": 1, "sink": SINK, "window": WINDOW, "lazy_layers": [1, 3],
             "model": {"num_layers": 4, "num_kv_heads": KV + 1, "head_dim": HD}})), "plan.json says 3"),
    ],
)
def test_broken_builds_are_clear_errors(tmp_path, setup, message):
    out = make_build(tmp_path / "out")
    setup(out)
    with pytest.raises(LtexportError, match=message) as err:
        package_triton(out, tmp_path / "repo")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "repo").exists()


def test_graph_contract_violations(tmp_path):
    out = make_build(tmp_path / "a", with_present_len=False)
    with pytest.raises(LtexportError, match="no output 'present_len'"):
        package_triton(out, tmp_path / "repo")
    out = make_build(tmp_path / "b", extra_input="attention_mask")
    with pytest.raises(LtexportError, match="input 'attention_mask' that Triton cannot supply"):
        package_triton(out, tmp_path / "repo")
    with pytest.raises(LtexportError, match="does not exist"):
        package_triton(tmp_path / "missing", tmp_path / "repo")
    (tmp_path / "file").write_text("")
    with pytest.raises(LtexportError, match="not a directory"):
        package_triton(make_build(tmp_path / "c"), tmp_path / "file")


def test_read_build_classifies_layers(tmp_path):
    io = read_build(make_build(tmp_path / "out", num_layers=3, lazy=(2,)))
    assert [c.layer for c in io.caches if not c.growing] == [2, 2]
    assert io.has_growing_caches and io.seq_start is None and io.lazy_layers == (2,)


def test_library_and_cli_import_without_tritonclient():
    import subprocess
    import sys

    code = ("import sys; sys.modules['tritonclient'] = None; sys.modules['tensorrt'] = None\n"
            "import ltexport.triton, ltexport.cli, ltexport.cli.package_cmd\n"
            "assert 'package' in ltexport.cli.main.commands\n"
            "assert 'onnx' not in sys.modules, 'onnx is imported lazily'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr


def test_two_trt_models_share_one_quoted_serve_command(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        package_triton(make_build(tmp_path / name, backend="trt", with_seq_start=True), repo, name=name)
    text = (repo / "README.md").read_text()
    plugins = ";".join(str(repo.resolve() / n / "1" / "libltexport_trt_plugin.so") for n in ("a", "b"))
    assert f"'--backend-config=tensorrt,plugins={plugins}'" in text  # ';' quoted for the shell
