"""Graph surgery for Triton: a `seq_start` control input that resets the sequence inside the model.

Why: Triton's implicit state gives the first request of a sequence a state whose variable dims are
1, whatever `initial_state.dims` says (core's SequenceStates::Initialize; an initial_state with a
0-size dim yields that shape over an empty, uninitialized buffer). A full layer's growing cache
therefore starts with one zero row that the model must drop. With this input (int32 [1], 1 on the
first request of a sequence, fed by Triton's CONTROL_SEQUENCE_START) the graph computes

    past_len'  = past_len * (1 - seq_start)
    past_kv'   = past_kv[:, :, seq_start * past_seq:, :]     (full layers: empty when starting)

and every node that read past_len / a full layer's past_key_values reads the primed tensor instead.
With seq_start = 0 the graph computes exactly what it did before. Lazy (fixed S+W) caches are left
alone: with past_len' = 0 no cache row is visible, and Triton zero-fills them at the start anyway.

The same function can run before a TensorRT engine is built, so the engine has the input too.
"""

from __future__ import annotations

from ltexport.errors import LtexportError
from ltexport.export.contract import PAST_LEN, SEQ_START as SEQUENCE_START

_PREFIX = "ltexport_triton"


def _rename_uses(graph, mapping: dict) -> None:
    """Point every node (including nodes in subgraphs) that reads a key of `mapping` at its value."""
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in mapping:
                node.input[k] = mapping[name]
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename_uses(attr.g, mapping)
            for sub in attr.graphs:
                _rename_uses(sub, mapping)


def add_sequence_start(model, growing_caches) -> None:
    """Add the int32 [1] input `seq_start` to `model` (an onnx.ModelProto, changed in place).

    growing_caches: names of the full layers' past_key_values inputs (their seq dim grows).
    Raises LtexportError when the graph already has an input of that name or reads past_len
    from a graph output directly.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    ins = {vi.name: vi for vi in graph.input if vi.name not in inits}
    outs = {vi.name for vi in graph.output}
    if SEQUENCE_START in ins or any(i.name == SEQUENCE_START for i in graph.initializer):
        raise LtexportError(f"the graph already has a tensor named '{SEQUENCE_START}'; package the build as it is")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise LtexportError(f"the graph uses ONNX opset {opset}; re-export with opset 13..21 to package for Triton")
    passthrough = [n for n in [PAST_LEN, *growing_caches] if n in outs]
    if passthrough:
        raise LtexportError(f"graph outputs {passthrough} are graph inputs passed through; rebuild the model")

    start64 = f"{_PREFIX}/start_i64"
    keep = f"{_PREFIX}/keep"
    one = f"{_PREFIX}/one"
    axis2 = f"{_PREFIX}/axis2"
    big = f"{_PREFIX}/int64_max"
    graph.initializer.extend([
        helper.make_tensor(one, TensorProto.INT64, [1], [1]),
        helper.make_tensor(axis2, TensorProto.INT64, [1], [2]),
        helper.make_tensor(big, TensorProto.INT64, [1], [2**63 - 1]),
    ])
    nodes = [
        helper.make_node("Cast", [SEQUENCE_START], [start64], to=TensorProto.INT64, name=f"{_PREFIX}/cast_start"),
        helper.make_node("Sub", [one, start64], [keep], name=f"{_PREFIX}/keep"),
    ]
    mapping = {}
    len_type = ins[PAST_LEN].type.tensor_type.elem_type
    if len_type == TensorProto.INT64:
        nodes.append(helper.make_node("Mul", [PAST_LEN, keep], [f"{_PREFIX}/{PAST_LEN}"], name=f"{_PREFIX}/past_len"))
    else:  # keep past_len's own dtype
        cast_keep = f"{_PREFIX}/keep_cast"
        nodes.append(helper.make_node("Cast", [keep], [cast_keep], to=len_type, name=f"{_PREFIX}/keep_cast"))
        nodes.append(helper.make_node("Mul", [PAST_LEN, cast_keep], [f"{_PREFIX}/{PAST_LEN}"], name=f"{_PREFIX}/past_len"))
    mapping[PAST_LEN] = f"{_PREFIX}/{PAST_LEN}"

    for name in growing_caches:
        if name not in ins:
            raise LtexportError(f"the graph has no input '{name}'; rebuild the model")
        shape, seq, begin, out = (f"{_PREFIX}/{name}/{s}" for s in ("shape", "seq", "begin", "sliced"))
        nodes += [
            helper.make_node("Shape", [name], [shape], name=shape),
            helper.make_node("Gather", [shape, axis2], [seq], axis=0, name=seq),
            helper.make_node("Mul", [seq, start64], [begin], name=begin),
            helper.make_node("Slice", [name, begin, big, axis2], [out], name=out),
        ]
        mapping[name] = out

    _rename_uses(graph, mapping)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    graph.input.append(helper.make_tensor_value_info(SEQUENCE_START, TensorProto.INT32, [1]))
