"""`ltexport build --backend ort` end to end on the tiny models: export, ONNX Runtime, validation."""

import json
import shutil

import numpy as np
import onnx
import pytest

from ltexport.backends.ort.session import OrtStep
from ltexport.backends.trt import is_available as trt_available
from ltexport.build_info import MARKER
from ltexport.export.onnx_export import export_onnx
from ltexport.hybrid.model import HybridModel
from ltexport.hybrid.step import TorchStep
from ltexport.outputs import why_not_owned
from ltexport.plan.schema import save_plan
from ltexport.validate.compare import CARRIED
from tests.conftest import assert_umask_modes, assert_user_error, run_cli
from tests.export.conftest import tiny_plan


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral", "tiny-qwen2"])
def test_ort_matches_pytorch_over_prefill_and_40_decode_steps(name, exported):
    hybrid, path = exported[name]
    ort, ref = OrtStep(path), TorchStep(hybrid)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 256, size=(2, 24))
    past = np.array([0, 0])
    o_caches, r_caches = ort.empty_caches(2), ref.empty_caches(2)
    for step in range(41):  # the 16-slot ring wraps several times
        o_logits, o_len, o_caches = ort(ids, past, o_caches)
        r_logits, r_len, r_caches = ref(ids, past, r_caches)
        np.testing.assert_allclose(o_logits, r_logits, atol=1e-4, rtol=1e-4, err_msg=f"step {step}")
        for a, b in zip(o_caches, r_caches):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        assert o_len.tolist() == r_len.tolist() == (past + ids.shape[1]).tolist()
        past = r_len
        ids = r_logits[:, -1].argmax(-1, keepdims=True)  # feed both the same tokens


def test_graph_io_names_and_dims(exported):
    _, path = exported["tiny-llama"]
    model = onnx.load(str(path), load_external_data=False)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in model.graph.input}
    outputs = {o.name: dims(o) for o in model.graph.output}
    assert list(inputs)[:2] == ["input_ids", "past_len"] and list(outputs)[:2] == ["logits", "present_len"]
    assert inputs["input_ids"] == ["batch", "seq"] and inputs["past_len"] == ["batch"]
    assert inputs["past_key_values.0.key"] == ["batch", 2, "past_seq", 16]  # full layer: grows
    assert inputs["past_key_values.1.value"] == ["batch", 2, 16, 16]        # lazy layer: S+W fixed
    assert outputs["present.0.key"][2] != "past_seq" and isinstance(outputs["present.0.key"][2], str)
    assert outputs["present.1.key"] == ["batch", 2, 16, 16]
    assert outputs["logits"] == ["batch", "seq", 256]
    nodes = [n for n in model.graph.node if n.domain == "ltexport"]
    assert [n.op_type for n in nodes] == ["SinkWindowAttention"] * 2
    assert {a.name for a in nodes[0].attribute} >= {"sink", "window", "scale", "prefill", "plugin_namespace", "plugin_version"}
    assert [f.name for f in model.functions] == ["SinkWindowAttention"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 21
    assert (path.parent / "model.onnx.data").stat().st_size > 0  # weights as external data


def test_fp16_export_runs_in_onnx_runtime(tiny_models, tmp_path):
    source, _ = tiny_models["tiny-llama"]
    model = source.load_model("fp16")
    hybrid = HybridModel(model, tiny_plan(source)).eval()
    path = export_onnx(hybrid, tmp_path)
    graph = onnx.load(str(path), load_external_data=False).graph
    assert {i.type.tensor_type.elem_type for i in graph.input[2:]} == {onnx.TensorProto.FLOAT16}
    ort, ref = OrtStep(path), TorchStep(hybrid)
    ids = np.arange(3, 40).reshape(1, -1)
    o_logits, _, _ = ort(ids, np.array([0]), ort.empty_caches(1))
    r_logits, _, _ = ref(ids, np.array([0]), ref.empty_caches(1))
    np.testing.assert_allclose(o_logits.astype(np.float32), r_logits.astype(np.float32), atol=2e-2, rtol=2e-2)


@pytest.fixture
def plan_file(tmp_path, tiny_models):
    path = tmp_path / "plan.json"
    save_plan(tiny_plan(tiny_models["tiny-mistral"][0]), path)
    return path


def test_build_validate_generate_through_the_cli(tmp_path, plan_file, umask_027):
    out = tmp_path / "out"
    result = run_cli(["build", "--model", "tiny-mistral", "--plan", plan_file, "-o", out, "--backend", "ort",
                      "--decode-steps", "40", "--max-context", "8"])
    assert result.exit_code == 0, result.stderr
    assert "ONNX Runtime ignores them" in result.stderr  # engine ranges are TensorRT's
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "pass" and report["backend"] == "ort" and report["dtype"] == "fp32"
    assert report["greedy"] == {"steps": 41, "tokens_match": True, "first_mismatch": None}
    names = {c["name"] for c in report["checks"]}
    assert {"prefill/logits", "prefill/present", "decode/logits", "decode/present"} <= names
    carried = [c for c in report["checks"] if c["name"] == f"decode/present ({CARRIED})"]
    assert carried and carried[0]["passed"] and carried[0]["max_abs_diff"] == 0  # copied rows are exact
    assert all(c["atol"] == 1e-4 and c["max_abs_diff"] <= 1e-4 for c in report["checks"] if c not in carried)
    assert "top1_agreement" in report["quality_drift_vs_original"]
    for name in ("model.onnx", "model.onnx.data", "plan.json", "report.md", "polygraphy_outputs.json", "polygraphy_inputs.json"):
        assert (out / name).is_file(), name
    assert_umask_modes(out)  # readable as a normal file would be (e.g. by Triton running as another user)
    assert run_cli(["validate", out]).exit_code == 0
    generated = run_cli(["generate", out, "--prompt", "hi", "--max-new-tokens", "5", "--temperature", "0.8", "--seed", "3"])
    assert generated.exit_code == 0, generated.stderr
    on_trt = run_cli(["generate", out, "--prompt", "hi", "--backend", "trt"])
    if not trt_available():
        assert_user_error(on_trt, "install TensorRT 10", "plugins/README.md")


def test_failed_validation_leaves_out_untouched(tmp_path, plan_file, tiny_llama_build):
    out = tmp_path / "out"
    shutil.copytree(tiny_llama_build[1], out)  # a previous build that must survive
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    kept = tmp_path / "failed"
    result = run_cli(["build", "--model", "tiny-mistral", "--plan", plan_file, "-o", out, "--backend", "ort",
                      "--atol", "0", "--rtol", "0", "--decode-steps", "2", "--keep-failed", kept])
    assert_user_error(result, "validation failed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((kept / "report.json").read_text())["status"] == "fail"
    assert why_not_owned(kept, MARKER) is None  # the kept build may be replaced by the next failure
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left behind


def test_plan_for_another_model_is_refused_before_loading(tmp_path, plan_file):
    result = run_cli(["build", "--model", "tiny-qwen2", "--plan", plan_file, "-o", tmp_path / "out"])
    assert_user_error(result, "plan was made for a model with architecture=MistralForCausalLM")
    assert not (tmp_path / "out").exists()


def test_trt_backend_without_tensorrt_gives_the_install_hint(tmp_path, plan_file):
    result = run_cli(["build", "--model", "tiny-mistral", "--plan", plan_file, "-o", tmp_path / "out", "--backend", "trt"])
    assert_user_error(result, "--backend trt needs TensorRT", "plugins/README.md")
    assert not (tmp_path / "out").exists()


def test_truncated_onnx_file_gives_a_clear_error(tmp_path, exported):
    _, path = exported["tiny-llama"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "build.json").write_text(json.dumps({"model": "tiny-llama", "backend": "ort", "dtype": "fp32", "tokenizer": "byte"}))
    (out / "model.onnx").write_bytes(path.read_bytes()[:200])
    result = run_cli(["generate", out, "--prompt", "x"])
    assert_user_error(result, "cannot read", "as ONNX", "rebuild it")


def test_fp16_build_passes_with_fp16_tolerances(tmp_path, plan_file):
    out = tmp_path / "out16"
    result = run_cli(["build", "--model", "tiny-mistral", "--plan", plan_file, "-o", out, "--backend", "ort",
                      "--dtype", "fp16", "--decode-steps", "24"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    tolerance_checks = [c for c in report["checks"] if CARRIED not in c["name"]]
    assert report["dtype"] == "fp16" and tolerance_checks and all(c["atol"] == 2e-2 for c in tolerance_checks)
    assert all(c["passed"] for c in report["checks"])  # fp16 caches are copied exactly too


def test_bf16_on_onnx_runtime_is_refused(tmp_path, plan_file):
    result = run_cli(["build", "--model", "tiny-mistral", "--plan", plan_file, "-o", tmp_path / "o", "--backend", "ort",
                      "--dtype", "bf16"])
    assert_user_error(result, "no bfloat16 kernels")
