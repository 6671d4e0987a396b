"""Small synthetic builds with exactly the `ltexport build` graph I/O, for packaging tests.

The graph is not a transformer, but it runs in ONNX Runtime and has the right data flow: full
layers concatenate new rows onto a growing cache, lazy layers update a fixed S+W cache, present_len
= past_len + seq, and logits depend on input_ids, past_len and the caches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KV, HD, VOCAB = 2, 4, 11
SINK, WINDOW = 2, 4
NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}
ONNX_DTYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}


def make_model(num_layers=4, lazy=(1, 3), dtype="fp32", kv_symbolic=False, with_seq_start=False,
               with_present_len=True, extra_input=None) -> onnx.ModelProto:
    et, npt = ONNX_DTYPES[dtype], NP_DTYPES[dtype]
    rng = np.random.default_rng(0)
    kv_dim = "kv_heads" if kv_symbolic else KV
    inits = [
        numpy_helper.from_array(rng.standard_normal((VOCAB, KV * HD)).astype(npt), "embed"),
        numpy_helper.from_array(rng.standard_normal((KV * HD, VOCAB)).astype(npt), "lm_head"),
        numpy_helper.from_array(np.array([0, 0, KV, HD], np.int64), "shape4"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape3"),
        numpy_helper.from_array(np.array(1, np.int64), "one_idx"),
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("past_len", TensorProto.INT64, ["batch"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", et, ["batch", "seq", VOCAB])]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["emb"]),
        helper.make_node("Reshape", ["emb", "shape4"], ["emb4"]),
        helper.make_node("Transpose", ["emb4"], ["new"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["emb", "lm_head"], ["base"]),
        helper.make_node("Reshape", ["past_len", "shape3"], ["pl3"]),
        helper.make_node("Cast", ["pl3"], ["plf"], to=et),
        helper.make_node("Add", ["base", "plf"], ["acc_-1"]),
    ]
    for i in range(num_layers):
        is_lazy = i in lazy
        seq_dim = SINK + WINDOW if is_lazy else "past_seq"
        out_dim = SINK + WINDOW if is_lazy else "total_seq"
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", et,
                                                        ["batch", kv_dim, seq_dim, HD]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", et, ["batch", kv_dim, out_dim, HD]))
        inits.append(numpy_helper.from_array(np.array(i + 1, npt), f"c{i}"))
        nodes.append(helper.make_node("Mul", ["new", f"c{i}"], [f"new{i}"]))
        pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        if is_lazy:
            nodes += [
                helper.make_node("ReduceMean", [f"new{i}"], [f"mean{i}"], axes=[2], keepdims=1),
                helper.make_node("Add", [pk, f"mean{i}"], [f"present.{i}.key"]),
                helper.make_node("Sub", [pv, f"mean{i}"], [f"present.{i}.value"]),
            ]
        else:
            nodes += [
                helper.make_node("Concat", [pk, "new"], [f"present.{i}.key"], axis=2),
                helper.make_node("Concat", [pv, f"new{i}"], [f"present.{i}.value"], axis=2),
            ]
        # logits see every cache: + sum(past key) - sum(past value) * 0.5
        nodes += [
            helper.make_node("ReduceSum", [pk], [f"sk{i}"], keepdims=0),
            helper.make_node("ReduceSum", [pv], [f"sv{i}"], keepdims=0),
            helper.make_node("Sub", [f"sk{i}", f"sv{i}"], [f"d{i}"]),
            helper.make_node("Add", [f"acc_{i - 1}", f"d{i}"], [f"acc_{i}"]),
        ]
    nodes.append(helper.make_node("Identity", [f"acc_{num_layers - 1}"], ["logits"]))
    if with_present_len:
        nodes += [
            helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
            helper.make_node("Gather", ["ids_shape", "one_idx"], ["seq_len"]),
            helper.make_node("Add", ["past_len", "seq_len"], ["present_len"]),
        ]
        # the contract's order (logits, present_len, presents), which OrtStep relies on
        outputs.insert(1, helper.make_tensor_value_info("present_len", TensorProto.INT64, ["batch"]))
    if with_seq_start:
        inputs.append(helper.make_tensor_value_info("seq_start", TensorProto.INT32, [1]))
    if extra_input:
        inputs.append(helper.make_tensor_value_info(extra_input, TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(nodes, "synthetic_hybrid", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def make_build(out: Path, *, backend="ort", dtype="fp32", num_layers=4, lazy=(1, 3), status="pass",
               model=None, plan_overrides=None, with_plan_file=True, with_plugin=True, **model_kw) -> Path:
    """A fake `ltexport build -o OUT` directory: model.onnx + model.onnx.data, plan.json, report.json,
    build.json (+ model.plan and plugins/ for backend='trt')."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else make_model(num_layers, lazy, dtype, **model_kw)
    onnx.save_model(model, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=128)
    plan = {
        "format": "ltexport-plan", "version": 1,
        "model": {"architecture": "LlamaForCausalLM", "num_layers": num_layers, "num_kv_heads": KV, "head_dim": HD},
        "sink": SINK, "window": WINDOW, "prefill": "dense", "lazy_layers": list(lazy), "scores": None,
    }
    plan.update(plan_overrides or {})
    (out / "plan.json").write_text(json.dumps(plan))
    (out / "report.json").write_text(json.dumps({"status": status, "backend": backend, "dtype": dtype, "checks": []}))
    # build.json as an older ltexport wrote it (no inventory): the file checks below stay read_build's
    (out / "build.json").write_text(json.dumps({"model": "synthetic", "backend": backend, "dtype": dtype,
                                                "tokenizer": "none"}))
    if backend == "trt" and with_plan_file:
        (out / "model.plan").write_bytes(b"fake TensorRT engine " + dtype.encode())
    if backend == "trt" and with_plugin:
        (out / "plugins").mkdir(exist_ok=True)
        (out / "plugins" / "libltexport_trt_plugin.so").write_bytes(b"\x7fELF fake plugin")
    return out


def tree(root: Path) -> dict:
    """{relative path: bytes} of every file under root (to show nothing changed)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Checking a generated config.pbtxt against the real schema and the packaged graph


def parse_config(path: Path):
    """config.pbtxt parsed with Triton's own ModelConfig schema (fails on any unknown field)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def _triton_type(elem_type: int) -> str:
    return {TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.BFLOAT16: "TYPE_BF16",
            TensorProto.INT64: "TYPE_INT64", TensorProto.INT32: "TYPE_INT32", TensorProto.BOOL: "TYPE_BOOL"}[elem_type]


def graph_io(model: onnx.ModelProto):
    """({name: (type name, dims)}, {...}) for graph inputs/outputs; dims: int or None (symbolic)."""
    def conv(vis):
        return {vi.name: (_triton_type(vi.type.tensor_type.elem_type),
                          [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim])
                for vi in vis}
    inits = {i.name for i in model.graph.initializer}
    return conv([vi for vi in model.graph.input if vi.name not in inits]), conv(model.graph.output)


def check_config_against_graph(cfg, model: onnx.ModelProto) -> None:
    """Every name, dtype and dim of `cfg` (ModelConfig) agrees with the graph, Triton's way.

    max_batch_size 0: config dims are full shapes; the batch dim is 1, a symbolic dim is -1.
    Each graph input is exactly one of: a config input, a sequence control input, a state input.
    Each graph output is a config output or a state output. Initial states are Triton-valid.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    ins, outs = graph_io(model)
    assert cfg.max_batch_size == 0

    def dims_ok(cfg_dims, graph_dims):
        assert len(cfg_dims) == len(graph_dims), (cfg_dims, graph_dims)
        assert cfg_dims[0] == 1
        for c, g in zip(cfg_dims[1:], graph_dims[1:]):
            assert c == (g if g is not None else -1), (cfg_dims, graph_dims)

    seen_in, seen_out = [], []
    for t in cfg.input:
        assert t.name in ins
        assert mc.DataType.Name(t.data_type) == ins[t.name][0]
        dims_ok(list(t.dims), ins[t.name][1])
        seen_in.append(t.name)
    for t in cfg.output:
        assert t.name in outs
        assert mc.DataType.Name(t.data_type) == outs[t.name][0]
        dims_ok(list(t.dims), outs[t.name][1])
        seen_out.append(t.name)
    sb = cfg.sequence_batching
    for ctl in sb.control_input:
        assert ctl.name in ins and ins[ctl.name] == ("TYPE_INT32", [1])
        assert [c.kind for c in ctl.control] == [mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START]
        assert list(ctl.control[0].int32_false_true) == [0, 1]
        seen_in.append(ctl.name)
    for st in sb.state:
        assert st.input_name in ins and st.output_name in outs
        assert mc.DataType.Name(st.data_type) == ins[st.input_name][0] == outs[st.output_name][0]
        dims_ok(list(st.dims), ins[st.input_name][1])
        dims_ok(list(st.dims), outs[st.output_name][1])
        # What Triton's SequenceBatchScheduler::GenerateInitialStateData accepts:
        assert len(st.initial_state) == 1
        init = st.initial_state[0]
        assert init.WhichOneof("state_data") == "zero_data" and init.name
        assert init.data_type == st.data_type
        assert len(init.dims) == len(st.dims) and -1 not in init.dims
        for i, s in zip(init.dims, st.dims):
            # -1 dims start at 1 row in Triton; fixed dims must match exactly
            assert i == (1 if s == -1 else s)
        seen_in.append(st.input_name)
        seen_out.append(st.output_name)
    assert sorted(seen_in) == sorted(ins), "every graph input is a config input, a control or a state, once"
    assert len(set(seen_out)) == len(seen_out) and set(seen_out) == set(outs)


# ---------------------------------------------------------------------------------------------
# Triton's implicit-state protocol, emulated on ONNX Runtime (no server here)


class EmulatedTriton:
    """Serves one packaged model the way Triton's sequence batcher + implicit state feed it.

    Follows Triton's core (SequenceStates::Initialize, checked against a Triton 2.51 server): on a
    request with sequence_start every state gets its config dims with each -1 replaced by 1, filled
    from initial_state; afterwards each state input is the previous response's state output; the
    CONTROL_SEQUENCE_START input is 1 only on the start request. `fill` replaces the start data of
    past_len and the growing (-1) states (Triton hands an uninitialized buffer when an initial_state
    dim is 0 or no initial_state is set); fixed-shape states always get their zero_data.
    Has the `infer` signature of tritonclient.grpc.InferenceServerClient, so client code runs on it.
    """

    NP = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64}

    def __init__(self, cfg, model_path, fill=0.0):
        import onnxruntime as ort
        from tritonclient.grpc import model_config_pb2 as mc

        self.cfg, self.fill, self.mc = cfg, fill, mc
        self.sess = ort.InferenceSession(str(model_path))
        self.out_names = [o.name for o in self.sess.get_outputs()]
        sb = cfg.sequence_batching
        (self.start,) = [c.name for c in sb.control_input
                         if c.control[0].kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START]
        self.states = {}  # sequence_id -> {state input name: array}
        self.calls = []  # (sequence_id, start, end, {input name: array})

    def _initial(self):
        out = {}
        for st in self.cfg.sequence_batching.state:
            shape = [1 if d == -1 else d for d in st.dims]
            assert shape == list(st.initial_state[0].dims)
            value = self.fill if (-1 in st.dims or st.input_name == "past_len") else 0
            out[st.input_name] = np.full(shape, value, self.NP[self.mc.DataType.Name(st.data_type)])
        return out

    def infer(self, model_name, inputs, model_version="", outputs=None, sequence_id=0, sequence_start=False,
              sequence_end=False, **_):
        assert model_name == self.cfg.name
        sent = {x.name(): np.frombuffer(x._raw_content, dtype=np.int64).reshape(x.shape()) for x in inputs}
        assert set(sent) == {t.name for t in self.cfg.input}, "a client sends exactly the config inputs"
        self.calls.append((sequence_id, sequence_start, sequence_end, sent))
        if sequence_start:
            self.states[sequence_id] = self._initial()
        states = self.states[sequence_id]  # KeyError: a request for a sequence that was never started
        feeds = {**sent, **states, self.start: np.array([1 if sequence_start else 0], np.int32)}
        result = dict(zip(self.out_names, self.sess.run(None, feeds)))
        sb = self.cfg.sequence_batching
        self.states[sequence_id] = {st.input_name: result[st.output_name] for st in sb.state}
        if sequence_end:
            del self.states[sequence_id]
        return _Result(result)


class _Result:
    def __init__(self, outs):
        self._outs = outs

    def as_numpy(self, name):
        return self._outs[name]
