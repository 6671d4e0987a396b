"""ONNX-side facts the engine builder needs: the custom nodes, the lazy caches they read, and a copy of the
model whose SinkWindowAttention nodes can only become the plugin (no tensorrt needed here)."""

from __future__ import annotations

from ltexport.export.contract import PLUGIN_NAME, PLUGIN_NAMESPACE, is_cache_input

# Nodes a cache may pass through between the graph input and the custom node.
_PASS_THROUGH = {"Identity", "Cast"}


def _is_custom(node) -> bool:
    return node.domain == PLUGIN_NAMESPACE and node.op_type == PLUGIN_NAME


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def count_sink_window_nodes(model) -> int:
    """Number of ltexport::SinkWindowAttention nodes in the graph (not counting function bodies)."""
    return sum(1 for node in _all_nodes(model.graph) if _is_custom(node))


def _attr(node, name):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def lazy_cache_lengths(model) -> dict[str, int]:
    """Graph input name -> sink + window, for every cache input that feeds a SinkWindowAttention node."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inputs = {i.name for i in model.graph.input}
    lengths: dict[str, int] = {}
    for node in model.graph.node:
        if not _is_custom(node) or len(node.input) < 5:
            continue
        sink, window = _attr(node, "sink"), _attr(node, "window")
        if sink is None or window is None:
            continue
        for name in node.input[3:5]:  # past_key, past_value
            seen = set()
            while name not in inputs and name in producers and name not in seen:
                seen.add(name)
                producer = producers[name]
                if producer.op_type not in _PASS_THROUGH or not producer.input:
                    break
                name = producer.input[0]
            if name in inputs:
                lengths[name] = int(sink) + int(window)
    return lengths


def without_sink_window_functions(model):
    """A copy of `model` without the SinkWindowAttention local function.

    With the body present, TensorRT's ONNX parser up to 10.6 inlines it (a local function wins over a plugin);
    10.7 on prefers a registered plugin creator (10.15 on also keys on the plugin_namespace attribute). Without
    the body the node can only become the plugin, on every version.
    """
    import onnx

    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    keep = [f for f in stripped.functions if not (f.domain == PLUGIN_NAMESPACE and f.name == PLUGIN_NAME)]
    del stripped.functions[:]
    stripped.functions.extend(keep)
    return stripped


def with_sequence_start(model):
    """Add Triton's `seq_start` control input to `model` (in place; see ltexport/export/sequence_start.py).

    Engines are built with it, since an engine cannot be changed later; the full layers' caches are the
    ones it resets."""
    from ltexport.export.sequence_start import add_sequence_start

    lazy = lazy_cache_lengths(model)
    growing = [i.name for i in model.graph.input if is_cache_input(i.name) and i.name not in lazy]
    add_sequence_start(model, growing)
    return model
