"""ltexport::SinkWindowAttention through torch.onnx.export(dynamo=True) and ONNX Runtime (CPU)."""

import copy
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ltexport.errors import LtexportError
from ltexport.export import sink_window_onnx as swo
from ltexport.hybrid.sink_window import PREFILL_MODES, sink_window_attention

CONFIGS = [(2, 3), (0, 4), (3, 1), (0, 1)]  # (sink, window)
GQA = [(2, 2), (6, 2)]  # (query heads, kv heads)
HEAD_DIM = 4
SCALE = 0.7


class Attention(torch.nn.Module):
    def __init__(self, sink, window, prefill):
        super().__init__()
        self.sink, self.window, self.prefill = sink, window, prefill

    def forward(self, query, key, value, past_key, past_value, past_len):
        return sink_window_attention(
            query, key, value, past_key, past_value, past_len,
            sink=self.sink, window=self.window, scale=SCALE, prefill=self.prefill,
        )  # fmt: skip


def inputs(batch, hq, hkv, seq, ring, dtype=torch.float32, past_len=(0, 1), seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, hq, seq, HEAD_DIM, generator=gen)
    k, v = torch.randn(2, batch, hkv, seq, HEAD_DIM, generator=gen)
    pk, pv = torch.randn(2, batch, hkv, ring, HEAD_DIM, generator=gen)
    return [t.to(dtype) for t in (q, k, v, pk, pv)] + [torch.tensor(past_len[:batch])]


@functools.cache
def exported(sink, window, hq, hkv, prefill, dtype=torch.float32):
    """(module, finalized model, ORT session) with dynamic batch and seq."""
    module = Attention(sink, window, prefill).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    new, cache = {0: batch, 2: seq}, {0: batch}
    program = torch.onnx.export(
        module, tuple(inputs(2, hq, hkv, 3, sink + window, dtype)), dynamo=True, opset_version=21,
        dynamic_shapes=(new, new, new, cache, cache, {0: batch}),
        custom_translation_table=swo.translation_table(), verbose=False,
    )  # fmt: skip
    model = swo.finalize_model(program.model_proto)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return module, model, session


def run_ort(session, args):
    names = [i.name for i in session.get_inputs()]
    outs = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
    return [torch.from_numpy(o) for o in outs]


def assert_same(session, module, args, atol=1e-5):
    """ORT and torch agree on output and presents; returns torch's presents."""
    expected = module(*args)
    got = run_ort(session, args)
    for e, g in zip(expected, got):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e, atol=atol, rtol=atol)
    return expected[1:], got[1:]


def test_one_plain_node_with_plugin_attributes_and_local_function():
    _, model, _ = exported(2, 3, 6, 2, "streaming")
    nodes = [n for n in model.graph.node if (n.domain, n.op_type) == (swo.DOMAIN, swo.OP_TYPE)]
    assert len(nodes) == 1 and len(model.graph.node) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {
        "sink": 2, "window": 3, "scale": pytest.approx(SCALE), "prefill": b"streaming",
        "plugin_namespace": swo.PLUGIN_NAMESPACE.encode(), "plugin_version": swo.PLUGIN_VERSION.encode(),
    }  # fmt: skip
    kinds = {a.name: a.type for a in nodes[0].attribute}
    assert kinds["sink"] == kinds["window"] == onnx.AttributeProto.INT
    assert kinds["scale"] == onnx.AttributeProto.FLOAT and kinds["prefill"] == onnx.AttributeProto.STRING
    functions = [(f.domain, f.name) for f in model.functions]
    assert functions == [(swo.DOMAIN, swo.OP_TYPE)]
    body_domains = {n.domain for n in model.functions[0].node}
    assert body_domains == {""}, "the body must use standard ONNX ops only"
    # What TensorRT's parser can import: attributes folded in, no attribute references, no strings.
    assert not any(a.ref_attr_name for n in model.functions[0].node for a in n.attribute)
    constants = [a.t for n in model.functions[0].node if n.op_type == "Constant" for a in n.attribute]
    assert constants and all(t.data_type != onnx.TensorProto.STRING for t in constants)
    assert list(model.functions[0].attribute) == ["sink", "window", "scale", "prefill", "plugin_namespace",
                                                  "plugin_version"]
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] <= 21 and opsets[swo.DOMAIN] == swo.OP_VERSION
    assert model.ir_version <= 13
    onnx.checker.check_model(model, full_check=True)


def test_dynamic_batch_and_seq_dims():
    _, model, _ = exported(2, 3, 6, 2, "dense")
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["query"] == ["batch", 6, "seq", HEAD_DIM]
    assert dims["past_key"] == ["batch", 2, 5, HEAD_DIM]


def test_finalize_is_idempotent_and_rejects_old_opsets():
    _, model, _ = exported(2, 3, 2, 2, "dense")
    again = swo.finalize_model(copy.deepcopy(model))
    assert len(again.functions) == 1 and [o.domain for o in again.opset_import].count(swo.DOMAIN) == 1
    old = copy.deepcopy(model)
    del old.functions[:]
    next(o for o in old.opset_import if o.domain == "").version = 14
    with pytest.raises(LtexportError, match="opset_version=21"):
        swo.finalize_model(old)


def test_body_runs_at_the_lowest_opset():
    """Opset 15 (CastLike, Shape(start, end)) is enough: the checker passes and ONNX Runtime gives the same result."""
    module, model, _ = exported(2, 3, 6, 2, "streaming")
    low = copy.deepcopy(model)
    del low.functions[:]
    for o in low.opset_import:
        if o.domain == "":
            o.version = swo.MIN_OPSET
    low = swo.finalize_model(low)
    assert [o.version for o in low.functions[0].opset_import if o.domain == ""] == [swo.MIN_OPSET]
    session = ort.InferenceSession(low.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_same(session, module, inputs(2, 6, 2, 4, 5, past_len=(0, 9)))


def test_shape_inference_sets_output_shapes():
    swo.register_schema()
    swo.register_schema()  # idempotent
    node = onnx.helper.make_node(swo.OP_TYPE, list(swo.INPUTS), list(swo.OUTPUTS), domain=swo.DOMAIN,
                                 sink=1, window=2, scale=1.0, prefill="dense")  # fmt: skip
    ttype = onnx.helper.make_tensor_type_proto
    fp16 = onnx.TensorProto.FLOAT16
    types = {
        "query": ttype(fp16, ["b", 6, "t", 8]), "key": ttype(fp16, ["b", 2, "t", 8]),
        "value": ttype(fp16, ["b", 2, "t", 8]), "past_key": ttype(fp16, ["b", 2, 3, 8]),
        "past_value": ttype(fp16, ["b", 2, 3, 8]), "past_len": ttype(onnx.TensorProto.INT64, ["b"]),
    }  # fmt: skip
    schema = onnx.defs.get_schema(swo.OP_TYPE, swo.OP_VERSION, swo.DOMAIN)
    out = onnx.shape_inference.infer_node_outputs(schema, node, types)
    assert out["output"] == types["query"] and out["present_key"] == types["past_key"]
    assert out["present_value"] == types["past_value"]


@pytest.mark.parametrize("prefill", PREFILL_MODES)
@pytest.mark.parametrize("hq,hkv", GQA)
@pytest.mark.parametrize("sink,window", CONFIGS)
def test_ort_matches_torch_single_calls(sink, window, hq, hkv, prefill):
    module, _, session = exported(sink, window, hq, hkv, prefill)
    ring = sink + window
    pairs = [(0, sink + 3 * window + 2), (1, ring - 1), (ring, sink + 7 * window + 1)]
    for seed, past_len in enumerate(pairs):
        for seq in sorted({1, 3, ring - 1, 3 * ring} - {0}):
            assert_same(session, module, inputs(2, hq, hkv, seq, ring, past_len=past_len, seed=seed))
    assert_same(session, module, inputs(1, hq, hkv, 2, ring, past_len=(ring + 1,)))  # batch 1


@pytest.mark.parametrize("prefill", PREFILL_MODES)
@pytest.mark.parametrize("sink,window", [(2, 3), (0, 2)])
def test_ort_chained_decode_wraps_ring(sink, window, prefill):
    """Each side feeds its own presents back; they must stay equal over several ring wraps."""
    module, _, session = exported(sink, window, 6, 2, prefill)
    ring = sink + window
    q, k, v, pk, pv, past_len = inputs(2, 6, 2, ring + 2, ring, past_len=(0, 3))
    torch_cache = ort_cache = (pk, pv)
    for step, seq in enumerate([ring + 2] + [1] * (3 * ring + 1) + [2]):
        q, k, v = inputs(2, 6, 2, seq, ring, seed=step + 1)[:3]
        expected = module(q, k, v, *torch_cache, past_len)
        got = run_ort(session, [q, k, v, *ort_cache, past_len])
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
        torch_cache, ort_cache = expected[1:], got[1:]
        past_len = past_len + seq


@pytest.mark.parametrize("prefill", PREFILL_MODES)
def test_ort_fp16(prefill):
    module, model, session = exported(2, 3, 6, 2, prefill, torch.float16)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    for seq, past_len in [(4, (0, 9)), (1, (5, 12))]:
        assert_same(session, module, inputs(2, 6, 2, seq, 5, torch.float16, past_len), atol=2e-3)


def test_ort_bf16():
    """numpy has no bfloat16: feed OrtValues, and read the outputs through an (exact) Cast to fp32."""
    module, model, _ = exported(2, 3, 6, 2, "streaming", torch.bfloat16)
    model = copy.deepcopy(model)
    for out in model.graph.output:
        cast = onnx.helper.make_node("Cast", [out.name], [out.name + "_fp32"], to=onnx.TensorProto.FLOAT)
        model.graph.node.append(cast)
        out.name += "_fp32"
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    args = inputs(2, 6, 2, 4, 5, torch.bfloat16, (0, 9))
    bf16 = onnx.TensorProto.BFLOAT16
    feeds = {
        i.name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(torch.int16).numpy(), bf16)
        if a.dtype == torch.bfloat16 else ort.OrtValue.ortvalue_from_numpy(a.numpy())
        for i, a in zip(session.get_inputs(), args)
    }  # fmt: skip
    got = [torch.from_numpy(o.numpy()) for o in session.run_with_ort_values(None, feeds)]
    for e, g in zip(module(*args), got):
        torch.testing.assert_close(g, e.float(), atol=1.6e-2, rtol=1.6e-2)


class TwoLayers(torch.nn.Module):
    """Two lazy layers with different (sink, window, prefill) around ordinary ops, as in a model."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(HEAD_DIM, HEAD_DIM)
        self.layers = [Attention(1, 2, "dense"), Attention(0, 3, "streaming")]

    def forward(self, query, key, value, past_key, past_value, past_len):
        out, pk, pv = self.layers[0](self.proj(query), key, value, past_key, past_value, past_len)
        out2, pk2, pv2 = self.layers[1](out, key * 2, value, pk, pv, past_len)
        return out2, pk2, pv2


def test_nodes_with_different_attributes_are_refused():
    """The folded body fits one attribute set: a graph mixing two is refused, not silently run with one."""
    module = TwoLayers().eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    new, cache = {0: batch, 2: seq}, {0: batch}
    program = torch.onnx.export(
        module, tuple(inputs(2, 6, 2, 3, 3)), dynamo=True, opset_version=21, verbose=False,
        dynamic_shapes=(new, new, new, cache, cache, {0: batch}), custom_translation_table=swo.translation_table(),
    )  # fmt: skip
    with pytest.raises(LtexportError, match="nodes disagree"):
        swo.finalize_model(program.model_proto)
