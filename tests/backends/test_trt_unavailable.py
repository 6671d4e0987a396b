"""ltexport.backends.trt without TensorRT: imports, clear errors, and the pure profile logic."""

import subprocess
import sys
import textwrap

import onnx
import pytest
from onnx import TensorProto, helper

from ltexport.backends import trt as trt_backend
from ltexport.backends.trt import Profiles, build_worker, compute_profiles
from ltexport.errors import LtexportError

SINK, WINDOW = 4, 8


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make `import tensorrt` fail here, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _cache(name, past):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT16, ["batch", 2, past, 8])


def synthetic_model(lazy_dim=SINK + WINDOW, with_function=True):
    """The exported graph's I/O: layer 0 full attention (past_seq), layer 1 lazy (fixed S+W)."""
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("past_len", TensorProto.INT64, ["batch"]),
        _cache("past_key_values.0.key", "past_seq"),
        _cache("past_key_values.0.value", "past_seq"),
        _cache("past_key_values.1.key", lazy_dim),
        _cache("past_key_values.1.value", lazy_dim),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["batch", "seq", 16]),
        helper.make_tensor_value_info("present_len", TensorProto.INT64, ["batch"]),
        _cache("present.0.key", "present_seq"),
        _cache("present.0.value", "present_seq"),
        _cache("present.1.key", lazy_dim),
        _cache("present.1.value", lazy_dim),
    ]
    nodes = [
        helper.make_node("Identity", ["past_key_values.1.key"], ["k_in"]),  # the walk back passes Identity
        helper.make_node("Cast", ["past_key_values.1.value"], ["v_in"], to=TensorProto.FLOAT16),
        helper.make_node(
            "SinkWindowAttention", ["q", "k", "v", "k_in", "v_in", "past_len"], ["attn", "present.1.key", "present.1.value"],
            domain="ltexport", sink=SINK, window=WINDOW, scale=0.125, prefill="dense",
            plugin_namespace="ltexport", plugin_version="1",
        ),
    ]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    functions = []
    if with_function:
        functions = [
            helper.make_function("ltexport", "SinkWindowAttention", ["q", "k", "v", "pk", "pv", "pl"], ["o", "nk", "nv"],
                                 [helper.make_node("Identity", ["q"], ["o"])], [helper.make_opsetid("", 21)]),
            helper.make_function("other", "Keep", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                                 [helper.make_opsetid("", 21)]),
        ]
    return helper.make_model(graph, functions=functions,
                             opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ltexport", 1)])


def test_is_available_false_without_tensorrt(no_tensorrt):
    assert trt_backend.is_available() is False


def test_entry_points_raise_with_the_install_hint(no_tensorrt, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx.save(synthetic_model(), onnx_path)
    calls = [
        lambda: trt_backend.build_engine(onnx_path, plugin_library=tmp_path / "lib.so", profile=Profiles()),
        lambda: trt_backend.build_engine_for_build_dir(tmp_path, type("Plan", (), {"sink": 4, "window": 8})()),
        lambda: trt_backend.trt_runner(tmp_path),
        lambda: trt_backend.load_plugin_library(tmp_path / "lib.so"),
        trt_backend.import_tensorrt,
    ]
    for call in calls:
        with pytest.raises(LtexportError) as info:
            call()
        message = str(info.value)
        assert trt_backend.INSTALL_HINT in message and "\n" not in message


def test_profiles_from_the_onnx_inputs():
    prefill, decode = compute_profiles(synthetic_model(), Profiles(max_batch=4, max_prompt=128, max_context=1024))
    assert (prefill.name, decode.name) == ("prefill", "decode")
    assert list(prefill.shapes) == ["input_ids", "past_len", "past_key_values.0.key", "past_key_values.0.value",
                                    "past_key_values.1.key", "past_key_values.1.value"]
    assert prefill.shapes["input_ids"] == ((1, 1), (4, 128), (4, 128))
    assert decode.shapes["input_ids"] == ((1, 1), (4, 1), (4, 1))
    assert prefill.shapes["past_len"] == decode.shapes["past_len"] == ((1,), (4,), (4,))
    # full layer: past_seq 0..max_context (opt: empty cache for prefill, full for decode)
    assert prefill.shapes["past_key_values.0.key"] == ((1, 2, 0, 8), (4, 2, 0, 8), (4, 2, 1024, 8))
    assert decode.shapes["past_key_values.0.value"] == ((1, 2, 0, 8), (4, 2, 1024, 8), (4, 2, 1024, 8))
    # lazy layer: the ring length is fixed
    ring = SINK + WINDOW
    for shapes in (prefill.shapes, decode.shapes):
        assert shapes["past_key_values.1.key"] == ((1, 2, ring, 8), (4, 2, ring, 8), (4, 2, ring, 8))


def test_opt_values_and_a_symbolic_ring_length():
    profile = Profiles(max_batch=8, max_prompt=256, max_context=2048, opt_batch=2, opt_prompt=64, opt_context=512)
    prefill, decode = compute_profiles(synthetic_model(lazy_dim="sink_window"), profile)
    assert prefill.shapes["input_ids"] == ((1, 1), (2, 64), (8, 256))
    assert decode.shapes["past_key_values.0.key"] == ((1, 2, 0, 8), (2, 2, 512, 8), (8, 2, 2048, 8))
    # a dim_param on a lazy cache is pinned to sink + window from the node that reads it
    assert prefill.shapes["past_key_values.1.value"][2] == (8, 2, SINK + WINDOW, 8)


def test_profiles_from_a_file(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(synthetic_model(), path)
    assert compute_profiles(path, Profiles()) == compute_profiles(synthetic_model(), Profiles())


@pytest.mark.parametrize("kwargs", [dict(max_batch=0), dict(max_prompt=0), dict(max_context=-1), dict(max_batch=True),
                                    dict(max_batch=2, opt_batch=3), dict(opt_prompt=0), dict(opt_context=5000)])
def test_bad_profiles_are_user_errors(kwargs):
    with pytest.raises(LtexportError):
        Profiles(**kwargs)


def test_unknown_dynamic_dim_is_a_user_error():
    model = synthetic_model()
    model.graph.input[2].type.tensor_type.shape.dim[1].dim_param = "kv_heads"
    with pytest.raises(LtexportError, match="past_key_values.0.key axis 1"):
        compute_profiles(model, Profiles())


def test_one_dim_name_in_two_roles_is_a_user_error():
    model = synthetic_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "past_seq"  # seq and past_seq share a name
    with pytest.raises(LtexportError, match="past_seq"):
        compute_profiles(model, Profiles())


def test_validation_profile_covers_the_validation_run():
    profile = Profiles.for_validation(sink=4, window=4092)
    assert profile.max_prompt >= 4 + 4092 + 64 and profile.max_context >= profile.max_prompt + 256


def test_graph_helpers():
    model = synthetic_model()
    assert trt_backend.count_sink_window_nodes(model) == 1
    assert trt_backend.lazy_cache_lengths(model) == {"past_key_values.1.key": 12, "past_key_values.1.value": 12}
    stripped = trt_backend.without_sink_window_functions(model)
    assert [(f.domain, f.name) for f in stripped.functions] == [("other", "Keep")]
    assert len(model.functions) == 2  # the input model is untouched


def test_missing_plugin_library_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv(trt_backend.PLUGIN_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(LtexportError, match=trt_backend.PLUGIN_ENV):
        trt_backend.find_plugin_library()


def test_every_module_imports_without_tensorrt():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        sys.modules["tensorrt"] = None  # `import tensorrt` now raises ImportError
        import ltexport.backends.trt as pkg
        names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in names:
            importlib.import_module(name)
        assert not pkg.is_available()
        assert "tensorrt" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        print(len(names))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 6


def test_plugin_identity_matches_the_exported_node():
    swo = pytest.importorskip("ltexport.export.sink_window_onnx")
    assert (trt_backend.PLUGIN_NAME, trt_backend.PLUGIN_NAMESPACE, trt_backend.PLUGIN_VERSION) == (
        swo.OP_TYPE, swo.PLUGIN_NAMESPACE, swo.PLUGIN_VERSION)
    assert swo.DOMAIN == trt_backend.PLUGIN_NAMESPACE  # graph.py finds nodes by (domain, op_type)


class _Tensor:
    def __init__(self, name, is_shape_tensor):
        self.name, self.is_shape_tensor = name, is_shape_tensor


class _Network:
    """The two INetworkDefinition members shape_input_values reads (no engine is built)."""

    def __init__(self, *inputs):
        self.inputs = inputs
        self.num_inputs = len(inputs)

    def get_input(self, i):
        return self.inputs[i]


def test_seq_start_gets_a_value_range_when_tensorrt_makes_it_a_shape_tensor():
    # Triton's seq_start sets a Slice start, so the parser makes it a shape-tensor input.
    network = _Network(_Tensor("input_ids", False), _Tensor("seq_start", True))
    assert build_worker.shape_input_values(network, "m.onnx") == {"seq_start": ((0,), (0,), (1,))}
    assert build_worker.shape_input_values(_Network(_Tensor("input_ids", False)), "m.onnx") == {}


def test_an_unknown_shape_tensor_input_is_refused():
    with pytest.raises(LtexportError, match=r"\['width'\].*re-export"):
        build_worker.shape_input_values(_Network(_Tensor("width", True)), "m.onnx")
