"""ONNX side of `ltexport::SinkWindowAttention`: schema, export translation, function body.

The exported graph holds one plain `ltexport::SinkWindowAttention` node per lazy layer. TensorRT's
ONNX parser looks its plugin up by op type, `plugin_version` and `plugin_namespace` (the engine
builder strips the function body first, see backends/trt/graph.py); every
other consumer (ONNX Runtime, or TensorRT without the plugin) runs the model-local function of the
same domain/name, whose body (`make_function`) mirrors `ltexport.hybrid.sink_window` with standard
ONNX ops only.

The body has the nodes' attributes folded in as constants: TensorRT's parser (10.x and RTX) refuses
Constants that reference function attributes and string Constants. All nodes of a graph share one
sink/window/scale/prefill (a plan has one of each, and every layer's head_dim), so one folded
function serves them all; finalize_model refuses a graph whose nodes disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from ltexport.errors import LtexportError
from ltexport.export.contract import DOMAIN, OP_TYPE, OP_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

INPUTS = ("query", "key", "value", "past_key", "past_value", "past_len")
OUTPUTS = ("output", "present_key", "present_value")
# the function body uses CastLike and Shape(start, end) (opset 15); TensorRT 10.x parses opset <= 21
MIN_OPSET, MAX_OPSET = 15, 21
MAX_IR_VERSION = 13  # ONNX Runtime 1.31 refuses newer IR (onnx 1.23's helper.make_model writes 14)

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


# ---------------------------------------------------------------- schema


def _infer_shapes(ctx) -> None:
    """Output like query; presents like past_key / past_value."""
    for out, src in ((0, 0), (1, 3), (2, 4)):
        if ctx.has_input(src):
            ctx.set_output_type(out, ctx.get_input_type(src))


def _schema() -> onnx.defs.OpSchema:
    param = onnx.defs.OpSchema.FormalParameter
    attr = onnx.defs.OpSchema.Attribute
    kind = onnx.defs.OpSchema.AttrType
    schema = onnx.defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        "Sink + sliding-window attention over a fixed ring KV cache (LightTransfer lazy layer).",
        inputs=[param(n, "T", "") for n in INPUTS[:5]] + [param("past_len", "I", "")],
        outputs=[param(n, "T", "") for n in OUTPUTS],
        type_constraints=[("T", _FLOAT_TYPES, "activations"), ("I", ["tensor(int64)"], "[batch]")],
        attributes=[
            attr("sink", kind.INT, "sink tokens S (>= 0)", required=True),
            attr("window", kind.INT, "recent window W (>= 1)", required=True),
            attr("scale", kind.FLOAT, "multiplies q.k", required=True),
            attr("prefill", kind.STRING, "'dense' or 'streaming'", required=True),
            attr("plugin_namespace", kind.STRING, "TensorRT plugin namespace", required=False),
            attr("plugin_version", kind.STRING, "TensorRT plugin version", required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_shapes)
    return schema


def register_schema() -> None:
    """Register the op schema with onnx (checker, shape inference, onnxscript); idempotent."""
    try:
        onnx.defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
    except onnx.defs.SchemaError:
        onnx.defs.register_schema(_schema())


# ---------------------------------------------------------------- export translation


def translate(
    query, key, value, past_key, past_value, past_len, sink: int, window: int, scale: float, prefill: str
):
    """custom_translation_table entry for torch.ops.ltexport.sink_window_attention.default.

    Emits one plain node (an onnxscript *function* would be inlined by the exporter).
    """
    import onnxscript

    register_schema()
    opset = onnxscript.values.Opset(DOMAIN, OP_VERSION)
    return opset.SinkWindowAttention(
        query, key, value, past_key, past_value, past_len,
        sink=sink, window=window, scale=scale, prefill=prefill,
        plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION,
    )  # fmt: skip


def translation_table() -> dict:
    """{torch op: translation} for torch.onnx.export(..., custom_translation_table=...)."""
    import torch

    import ltexport.hybrid.sink_window  # noqa: F401  (registers the torch op)

    return {torch.ops.ltexport.sink_window_attention.default: translate}


# ---------------------------------------------------------------- function body


class _Body:
    """Tiny node builder: `b("Op", *inputs, **attrs)` appends a node and returns its output name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []

    def __call__(self, op: str, *inputs: str, **attrs) -> str:
        name = f"_{len(self.nodes)}_{op}"
        self.nodes.append(helper.make_node(op, list(inputs), [name], **attrs))
        return name

    def const(self, value, dtype=TensorProto.INT64) -> str:
        values = value if isinstance(value, list) else [value]
        dims = [len(values)] if isinstance(value, list) else []
        return self("Constant", value=helper.make_tensor("v", dtype, dims, values))


@dataclass(frozen=True)
class FoldedAttributes:
    """The node attributes the function body is specialised for."""

    sink: int
    window: int
    scale: float  # the float32 value of the node attribute
    prefill: str  # "dense" | "streaming"


def _node_attributes(node) -> FoldedAttributes:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    try:
        prefill = values["prefill"].decode() if isinstance(values["prefill"], bytes) else values["prefill"]
        return FoldedAttributes(int(values["sink"]), int(values["window"]), float(values["scale"]), prefill)
    except KeyError as exc:
        raise LtexportError(f"{OP_TYPE} node {node.name!r} has no {exc.args[0]!r} attribute; re-export the model") from None


def shared_attributes(model: onnx.ModelProto) -> FoldedAttributes | None:
    """The attributes every SinkWindowAttention node of `model` has (None: no such node)."""
    found = {_node_attributes(n) for n in model.graph.node if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)}
    if len(found) > 1:
        shown = ", ".join(sorted(f"sink={a.sink} window={a.window} scale={a.scale} prefill={a.prefill}" for a in found))
        raise LtexportError(f"the {OP_TYPE} nodes disagree ({shown}); one graph takes one sink/window/prefill "
                            "and head_dim (its function body has them folded in): export one plan per graph")
    return next(iter(found), None)


def _slot_positions(b: _Body, length: str, slot: str, sink: str, window: str, one: str):
    """Position held by each ring slot after `length` [B,1] writes, and its validity ([B,S+W])."""
    last = b("Sub", b("Sub", length, one), sink)  # [B,1] newest window offset (< 0: none)
    offset = b("Sub", slot, sink)  # [S+W] r = slot - S
    win_pos = b("Sub", b("Add", sink, last), b("Mod", b("Sub", last, offset), window))  # fmod=0: floor
    is_sink = b("Less", slot, sink)
    pos = b("Where", is_sink, slot, win_pos)
    valid = b("And", b("Less", pos, length), b("Or", is_sink, b("GreaterOrEqual", pos, sink)))
    return pos, valid


def _mask_and_source(b: _Body, past_len: str, query: str, sink: str, window: str, dense: str):
    """mask [B,T,S+W+T] bool over keys [ring, new]; src [B,S+W] gather index into the same."""
    zero, one = b.const(0), b.const(1)
    ring = b("Add", sink, window)  # S+W
    seq = b("Squeeze", b("Shape", query, start=2, end=3), b.const([0]))  # T
    slot = b("Range", zero, ring, one)  # [S+W]
    start = b("Unsqueeze", past_len, b.const([1]))  # [B,1]
    q_pos = b("Add", start, b("Range", zero, seq, one))  # [B,T]
    ring_pos, ring_valid = _slot_positions(b, start, slot, sink, window, one)
    k_pos = b("Unsqueeze", b("Concat", ring_pos, q_pos, axis=1), one)  # [B,1,N]
    new_valid = b("Expand", b.const(True, TensorProto.BOOL), b("Shape", q_pos))
    k_valid = b("Unsqueeze", b("Concat", ring_valid, new_valid, axis=1), one)  # [B,1,N]
    q = b("Unsqueeze", q_pos, b.const([2]))  # [B,T,1]
    in_window = b("Or", b("Less", k_pos, sink), b("Greater", k_pos, b("Sub", q, window)))
    allowed = b("And", b("And", k_valid, b("LessOrEqual", k_pos, q)), b("Or", dense, in_window))
    end_pos, end_valid = _slot_positions(b, b("Add", start, seq), slot, sink, window, one)
    from_new = b("And", end_valid, b("GreaterOrEqual", end_pos, start))
    src = b("Where", from_new, b("Add", ring, b("Sub", end_pos, start)), slot)  # [B,S+W]
    return allowed, src, ring


def _attend(b: _Body, query: str, keys: str, values: str, allowed: str, scale: str) -> str:
    """fp32 softmax(q.k * scale) v with GQA via a [B,Hkv,G,T,D] view of query."""
    fp32 = TensorProto.FLOAT
    head_split = b(
        "Concat",
        b("Shape", query, start=0, end=1), b("Shape", keys, start=1, end=2),
        b.const([-1]), b("Shape", query, start=2, end=4), axis=0,
    )  # fmt: skip
    q5 = b("Reshape", b("Cast", query, to=fp32), head_split)  # [B,Hkv,G,T,D]
    axis2 = b.const([2])
    k5 = b("Unsqueeze", b("Cast", keys, to=fp32), axis2)  # [B,Hkv,1,N,D]
    v5 = b("Unsqueeze", b("Cast", values, to=fp32), axis2)
    scores = b("Mul", b("MatMul", q5, b("Transpose", k5, perm=[0, 1, 2, 4, 3])), scale)  # [B,Hkv,G,T,N]
    mask5 = b("Unsqueeze", allowed, b.const([1, 2]))  # [B,1,1,T,N]
    scores = b("Where", mask5, scores, b.const(-math.inf, fp32))
    out5 = b("MatMul", b("Softmax", scores, axis=-1), v5)  # [B,Hkv,G,T,D]
    return b("Reshape", out5, b("Shape", query))


def make_function(attrs: FoldedAttributes, opset: int = MAX_OPSET) -> onnx.FunctionProto:
    """Model-local function `ltexport::SinkWindowAttention` in standard ONNX ops (opset 15..21), for nodes
    with the attributes `attrs` (folded in as constants; the attributes stay declared so nodes may carry them)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise LtexportError(
            f"SinkWindowAttention needs ONNX opset {MIN_OPSET}..{MAX_OPSET}, got {opset}; "
            f"export with opset_version={MAX_OPSET}"
        )
    b = _Body()
    sink, window = b.const(attrs.sink), b.const(attrs.window)
    scale = b.const(attrs.scale, TensorProto.FLOAT)
    dense = b.const(attrs.prefill == "dense", TensorProto.BOOL)
    allowed, src, ring = _mask_and_source(b, "past_len", "query", sink, window, dense)
    keys = b("Concat", "past_key", "key", axis=2)  # [B,Hkv,S+W+T,D]
    values = b("Concat", "past_value", "value", axis=2)
    out = _attend(b, "query", keys, values, allowed, scale)
    b.nodes.append(helper.make_node("CastLike", [out, "query"], ["output"]))
    index_shape = b(
        "Concat",
        b("Shape", "key", start=0, end=2), b("Unsqueeze", ring, b.const([0])),
        b("Shape", "key", start=3, end=4), axis=0,
    )  # fmt: skip
    index = b("Expand", b("Unsqueeze", src, b.const([1, 3])), index_shape)  # [B,Hkv,S+W,D]
    b.nodes.append(helper.make_node("GatherElements", [keys, index], ["present_key"], axis=2))
    b.nodes.append(helper.make_node("GatherElements", [values, index], ["present_value"], axis=2))
    return helper.make_function(
        DOMAIN, OP_TYPE, list(INPUTS), list(OUTPUTS), b.nodes,
        [helper.make_opsetid("", opset)],
        attributes=["sink", "window", "scale", "prefill", "plugin_namespace", "plugin_version"],
    )  # fmt: skip


# ---------------------------------------------------------------- after export


def _opset(model: onnx.ModelProto, domain: str) -> int | None:
    return next((o.version for o in model.opset_import if o.domain == domain), None)


def finalize_model(model: onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """Attach the local function (once) and the `ltexport` opset import; check the result.

    Mutates and returns `model`. Raises LtexportError if the model's opset cannot carry the op.
    `check=False` skips onnx.checker for protos over 2 GB (check those by path instead).
    """
    register_schema()
    opset = _opset(model, "")
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise LtexportError(
            f"model uses ONNX opset {opset}; SinkWindowAttention needs {MIN_OPSET}..{MAX_OPSET}: "
            f"pass opset_version={MAX_OPSET} to torch.onnx.export"
        )
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    attrs = shared_attributes(model)
    if attrs is not None and not any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions):
        model.functions.append(make_function(attrs, opset))
    if _opset(model, DOMAIN) is None:
        model.opset_import.append(helper.make_opsetid(DOMAIN, OP_VERSION))
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model
