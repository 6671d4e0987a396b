"""Real engines from the real TensorRT-RTX builder, on a machine without a GPU.

A covering set (every model, plugin and none, dense and streaming prefill, fp32 and fp16, not their full
product): tiny-llama fp32 dense through `ltexport build --backend trt-rtx` (with and without the plugin),
tiny-mistral fp16 streaming (with and without), tiny-qwen2 fp16 dense (with). The engines are built and
checked against their graphs, never run: running needs a GPU.

Needs what .ci/run installs (scripts/setup.sh): the tensorrt-rtx wheels and plugins/build/libltexport_trt_plugin.so.
Under CI=1 a missing one fails these tests instead of skipping them.
"""

import json
import math
import os
import shutil
from pathlib import Path

import onnx
import pytest

from ltexport.backends import trt
from ltexport.backends.trt.record import binding_mismatches, configured_seq_ranges, layer_counts, plugin_cache_layers
from ltexport.backends.trt.record import read_record
from ltexport.build import export_model
from ltexport.export.contract import ENGINE_FILE, ENGINE_RECORD_FILE, PLUGIN_LIBRARY, build_plugin_path
from ltexport.models.sources import resolve
from ltexport.plan.schema import Plan, save_plan
from tests.conftest import assert_user_error, run_cli

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "build" / PLUGIN_LIBRARY
PROFILE = trt.Profiles(max_batch=2, max_prompt=64, max_context=256)
CLI_PROFILE = trt.Profiles(max_batch=1, max_prompt=72, max_context=256)  # what the CLI build below asks for
SINK, WINDOW = 2, 6


@pytest.fixture(scope="module", autouse=True)
def rtx_builder():
    missing = [what for what, ok in (("the tensorrt-rtx wheels", trt.is_available("trt-rtx")),
                                     (str(PLUGIN), PLUGIN.is_file())) if not ok]
    if missing:
        message = f"missing {' and '.join(missing)}: run bash scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)  # .ci/run installs them: their absence is a CI failure
        pytest.skip(message)


def plan_for(name, prefill, lazy=(1, 3)):
    return Plan(model=resolve(name).spec().plan_header(), sink=SINK, window=WINDOW, lazy_layers=list(lazy),
                prefill=prefill)


def exported(tmp, name, dtype, prefill):
    out = tmp / f"{name}-{dtype}-{prefill}"
    out.mkdir()
    export_model(resolve(name), plan_for(name, prefill), dtype, out)
    return out


def engine(src: Path, dst: Path, plan: Plan, plugin: bool, profile=PROFILE):
    """Build dst/model.plan from src's graph (copied, so each engine has its own build directory)."""
    dst.mkdir()
    for f in ("model.onnx", "model.onnx.data"):
        shutil.copy2(src / f, dst / f)
    return trt.build_engine_for_build_dir(dst, plan, flavor="trt-rtx", plugin=plugin, profile=profile,
                                          plugin_library=PLUGIN)


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory):
    """`ltexport build --backend trt-rtx` as a user runs it: tiny-llama, fp32, dense, with the plugin."""
    tmp = tmp_path_factory.mktemp("cli")
    save_plan(plan_for("tiny-llama", "dense"), tmp / "plan.json")
    result = run_cli(["build", "--model", "tiny-llama", "--plan", tmp / "plan.json", "-o", tmp / "out",
                      "--backend", "trt-rtx", "--compute-capability", "80,86,89,120", "--max-prompt", "72",
                      "--max-context", "256"])
    assert result.exit_code == 0, result.stderr
    return tmp / "out", result


@pytest.fixture(scope="module")
def engines(tmp_path_factory, cli_build):
    """label -> (build dir, plan, dtype, record) for the covering set."""
    tmp = tmp_path_factory.mktemp("engines")
    out, _ = cli_build
    llama = plan_for("tiny-llama", "dense")
    mistral = plan_for("tiny-mistral", "streaming")
    qwen = plan_for("tiny-qwen2", "dense")
    mistral_graph = exported(tmp, "tiny-mistral", "fp16", "streaming")
    qwen_graph = exported(tmp, "tiny-qwen2", "fp16", "dense")
    return {
        "llama-fp32-dense-plugin": (out, llama, "fp32", read_record(out / ENGINE_RECORD_FILE)),
        "llama-fp32-dense-none": (tmp / "l0", llama, "fp32", engine(out, tmp / "l0", llama, False, CLI_PROFILE)),
        "mistral-fp16-streaming-plugin": (tmp / "m1", mistral, "fp16", engine(mistral_graph, tmp / "m1", mistral, True)),
        "mistral-fp16-streaming-none": (tmp / "m0", mistral, "fp16", engine(mistral_graph, tmp / "m0", mistral, False)),
        "qwen2-fp16-dense-plugin": (tmp / "q1", qwen, "fp16", engine(qwen_graph, tmp / "q1", qwen, True)),
    }


LABELS = ["llama-fp32-dense-plugin", "llama-fp32-dense-none", "mistral-fp16-streaming-plugin",
          "mistral-fp16-streaming-none", "qwen2-fp16-dense-plugin"]
WITH_PLUGIN = [label for label in LABELS if label.endswith("-plugin")]


def graph_with_seq_start(out: Path):
    return trt.with_sequence_start(onnx.load(str(out / "model.onnx"), load_external_data=False))


@pytest.mark.parametrize("label", LABELS)
def test_engine_is_written_and_its_bindings_are_the_graphs(engines, label):
    out, plan, dtype, record = engines[label]
    assert record["builder"].startswith("TensorRT-RTX ") and record["flavor"] == "trt-rtx"
    assert (out / ENGINE_FILE).stat().st_size == record["bytes"] > 0
    assert record["compute_capabilities"] == ["SM80", "SM86", "SM89", "SM120"]
    assert binding_mismatches(record, graph_with_seq_start(out)) == []
    by_name = {b["name"]: b for b in record["bindings"]}
    assert by_name["seq_start"] == {"name": "seq_start", "io": "input", "dtype": "int32", "shape": [1],
                                    "shape_tensor": True}
    float_type = {"fp32": "float32", "fp16": "float16"}[dtype]
    assert by_name["logits"]["dtype"] == by_name["past_key_values.0.key"]["dtype"] == float_type
    assert by_name["input_ids"]["dtype"] == by_name["past_len"]["dtype"] == "int64"
    ring = plan.sink + plan.window
    for i in range(plan.num_layers):
        seq = ring if i in plan.lazy_layers else -1
        assert by_name[f"past_key_values.{i}.key"]["shape"][2] == by_name[f"present.{i}.value"]["shape"][2] == seq


@pytest.mark.parametrize("label", LABELS)
def test_profiles_are_the_prefill_and_decode_ranges(engines, label):
    out, plan, _, record = engines[label]
    prefill, decode = record["profiles"]
    profile = CLI_PROFILE if label.startswith("llama") else PROFILE
    max_prompt, batch = profile.max_prompt, profile.max_batch
    assert (prefill["name"], decode["name"]) == ("prefill", "decode")
    assert prefill["shapes"]["input_ids"] == [[1, 1], [batch, max_prompt], [batch, max_prompt]]
    assert decode["shapes"]["input_ids"] == [[1, 1], [batch, 1], [batch, 1]]
    for p in (prefill, decode):
        assert p["shape_values"] == {"seq_start": [[0], [0], [1]]}
        lazy = p["shapes"][f"past_key_values.{plan.lazy_layers[0]}.key"]
        assert lazy[0][2] == lazy[2][2] == plan.sink + plan.window
        assert p["shapes"]["past_key_values.0.value"][2][2] == 256  # full layer: up to max_context


@pytest.mark.parametrize("label", WITH_PLUGIN)
def test_plugin_layers_are_the_plans_lazy_layers_and_ran_their_build_interfaces(engines, label):
    out, plan, dtype, record = engines[label]
    assert layer_counts(record)["PLUGIN_V3"] == len(record["plugin_layers"]) == len(plan.lazy_layers)
    assert plugin_cache_layers(record) == plan.lazy_layers  # each reads the ring of one lazy layer
    head_dim = plan.model["head_dim"]
    float_type = {"fp32": "float32", "fp16": "float16"}[dtype]
    for layer in record["plugin_layers"]:
        # created from the ONNX node's fields
        fields = dict(kv.split("=") for kv in layer["metadata"].split())
        assert fields == {"sink": str(plan.sink), "window": str(plan.window), "prefill": plan.prefill,
                          "scale": fields["scale"]}
        assert math.isclose(float(fields["scale"]), head_dim ** -0.5, rel_tol=1e-6)
        calls = record["plugin_calls"][layer["name"]]
        assert [c["phase"] for c in calls["createPlugin"]] == ["build", "runtime"]  # runtime: the round trip
        # output types and shapes, format combinations: configurePlugin saw both profiles, linear, in the dtype
        assert configured_seq_ranges(record, layer["name"]) == ["1..1", f"1..{record['profiles'][0]['shapes']['input_ids'][2][1]}"]
        for c in calls["configurePlugin"]:
            assert (c["dtype"], c["past_len"], c["format"], c["ring"]) == (float_type, "int64", "linear",
                                                                           str(plan.sink + plan.window))
        assert len(calls["getWorkspaceSize"]) == 2
        assert layer["aliased"] == {"present_key": "past_key", "present_value": "past_value"}  # in place
        assert calls["getFieldsToSerialize"] == [{k: fields[k] for k in ("sink", "window", "scale", "prefill")}]
        assert record["round_trip"][layer["name"]] == "same config"


@pytest.mark.parametrize("model", ["llama-fp32-dense", "mistral-fp16-streaming"])
def test_without_the_plugin_the_function_body_is_inlined(engines, model):
    """Layer counts cross-checked: the plugin-free network has no plugin layer, and each lazy node became the same
    number of layers in place of its one plugin layer."""
    _, plan, _, plugged = engines[f"{model}-plugin"]
    _, _, _, free = engines[f"{model}-none"]
    assert free["plugin"] is False and free["plugin_layers"] == [] and "PLUGIN_V3" not in layer_counts(free)
    lazy = len(plan.lazy_layers)
    inlined = len(free["layers"]) - (len(plugged["layers"]) - lazy)
    assert inlined > 0 and inlined % lazy == 0, (len(free["layers"]), len(plugged["layers"]))
    assert free["bindings"] == plugged["bindings"]


def test_the_build_reports_a_built_not_run_engine(cli_build):
    out, result = cli_build
    report = (out / "report.md").read_text()
    assert "## TensorRT engine: built, NOT run" in report and "backend `ort`" in report
    assert "has not been run" in result.stderr
    info = json.loads((out / "build.json").read_text())
    assert info["backend"] == "trt-rtx" and info["engine"]["executed"] is False
    assert info["engine"]["bindings"] == read_record(out / ENGINE_RECORD_FILE)["bindings"]
    assert build_plugin_path(out).is_file()  # the build keeps the plugin under the contract's name
    inspect = run_cli(["inspect", out])
    assert inspect.exit_code == 0
    for text in ("TensorRT engine model.plan", "plugin layers (ltexport::SinkWindowAttention): 2", "seq_start",
                 "(shape tensor)", "prefill:", "decode:", "configured for seq 1..1, 1..72"):
        assert text in inspect.stdout


def test_running_the_engine_needs_a_gpu(cli_build):
    out, _ = cli_build
    for args in (["validate", out], ["generate", out, "--prompt", "hi", "--backend", "trt-rtx"]):
        assert_user_error(run_cli(args), "needs an NVIDIA GPU", "--backend ort")


def test_packaging_writes_a_config_that_matches_the_engine(cli_build, tmp_path):
    from tests.triton.triton_synth import parse_config
    from tritonclient.grpc import model_config_pb2 as mc

    out, _ = cli_build
    result = run_cli(["package", out, "--triton", tmp_path / "repo"])
    assert result.exit_code == 0, result.stderr
    model = tmp_path / "repo" / "ltexport"
    assert (model / "1" / ENGINE_FILE).read_bytes() == (out / ENGINE_FILE).read_bytes()
    assert (model / "1" / PLUGIN_LIBRARY).read_bytes() == build_plugin_path(out).read_bytes()
    cfg = parse_config(model / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == ENGINE_FILE
    engine = {b["name"]: b for b in read_record(out / ENGINE_RECORD_FILE)["bindings"]}
    types = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}

    def matches(name, data_type, dims, io):
        b = engine[name]
        assert b["io"] == io and types[b["dtype"]] == mc.DataType.Name(data_type)
        assert list(dims) == [1] + b["shape"][1:], (name, list(dims), b["shape"])  # batch 1, -1 stays -1

    seen = set()
    for t in cfg.input:
        matches(t.name, t.data_type, t.dims, "input")
        seen.add(t.name)
    for t in cfg.output:
        matches(t.name, t.data_type, t.dims, "output")
        seen.add(t.name)
    for st in cfg.sequence_batching.state:
        matches(st.input_name, st.data_type, st.dims, "input")
        matches(st.output_name, st.data_type, st.dims, "output")
        seen |= {st.input_name, st.output_name}
    (control,) = cfg.sequence_batching.control_input
    assert control.name == "seq_start" and engine["seq_start"]["dtype"] == "int32" and engine["seq_start"]["shape"] == [1]
    seen.add(control.name)
    assert seen == set(engine), "every engine binding is a config input, output, state or control"


def test_bad_compute_capabilities_are_user_errors(tmp_path):
    save_plan(plan_for("tiny-llama", "dense"), tmp_path / "plan.json")
    args = ["build", "--model", "tiny-llama", "--plan", tmp_path / "plan.json", "-o", tmp_path / "out"]
    assert_user_error(run_cli(args + ["--backend", "trt-rtx", "--compute-capability", "90"]),
                      "unknown compute capability '90'", "80, 86")
    assert_user_error(run_cli(args + ["--backend", "ort", "--compute-capability", "80"]), "is for --backend trt-rtx")
    assert not (tmp_path / "out").exists()
