"""What a TensorRT build produced, as plain JSON (no tensorrt needed to read it).

The record (OUT/model.plan.json) holds the network's bindings, the optimization profiles as the builder
received them, the layers, the plugin layers, and the plugin's own trace of the build-time calls TensorRT
made (plugins/src/sink_window_plugin.cpp logs one kVERBOSE line per call). It is what `ltexport inspect`
shows where the engine cannot be deserialized (TensorRT-RTX needs a GPU for that), what the build checks
against the ONNX graph, and what packaging writes the Triton config from.
"""

from __future__ import annotations

from ltexport.errors import LtexportError

TRACE_PREFIX = "[ltexport::SinkWindowAttention] "
# ONNX TensorProto element types -> the dtype names the record uses
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 16: "bfloat16"}
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
               "BOOL": "bool", "INT8": "int8", "UINT8": "uint8"}


def dtype_name(trt_dtype) -> str:
    return _TRT_DTYPES.get(trt_dtype.name, trt_dtype.name.lower())


# ---------------------------------------------------------------- from the network (in the build worker)


def bindings(network) -> list[dict]:
    """The network's inputs and outputs: what the engine's I/O tensors are."""
    def one(tensor, io):
        return {"name": tensor.name, "io": io, "dtype": dtype_name(tensor.dtype), "shape": list(tensor.shape),
                "shape_tensor": bool(tensor.is_shape_tensor)}

    return ([one(network.get_input(i), "input") for i in range(network.num_inputs)]
            + [one(network.get_output(i), "output") for i in range(network.num_outputs)])


def profile(name: str, opt_profile, network) -> dict:
    """One optimization profile, read back from the builder's IOptimizationProfile."""
    shapes, values = {}, {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.is_shape_tensor:
            values[tensor.name] = [list(v) for v in opt_profile.get_shape_input(tensor.name)]
        else:
            shapes[tensor.name] = [list(d) for d in opt_profile.get_shape(tensor.name)]
    return {"name": name, "shapes": shapes, "shape_values": values}


def layers(network, trt) -> list[dict]:
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
        out.append({"name": layer.name, "type": layer.type.name,
                    "outputs": [[t.name, dtype_name(t.dtype)] for t in outputs if t is not None]})
    return out


def parse_trace(lines: list[str]) -> dict:
    """{node: {call: [fields, ...]}} from the plugin's trace lines "call: node=NAME key=value ..." (deduplicated)."""
    calls: dict = {}
    for line in lines:
        call, _, rest = line.partition(": ")
        fields = dict(item.split("=", 1) for item in rest.split() if "=" in item)
        node = fields.pop("node", "?")
        seen = calls.setdefault(node, {}).setdefault(call, [])
        if fields not in seen:
            seen.append(fields)
    return calls


# ---------------------------------------------------------------- reading a record


def layer_counts(record: dict) -> dict:
    counts: dict = {}
    for layer in record["layers"]:
        counts[layer["type"]] = counts.get(layer["type"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def configured_seq_ranges(record: dict, node: str) -> list[str]:
    """The query seq ranges TensorRT configured a plugin layer for: one per optimization profile."""
    return sorted({c["seq"] for c in record["plugin_calls"].get(node, {}).get("configurePlugin", [])})


def _graph_io(model) -> list[dict]:
    def one(value_info, io):
        t = value_info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": value_info.name, "io": io, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                "shape": shape}

    initializers = {i.name for i in model.graph.initializer}
    return ([one(v, "input") for v in model.graph.input if v.name not in initializers]
            + [one(v, "output") for v in model.graph.output])


def binding_mismatches(record: dict, model) -> list[str]:
    """How the engine's bindings differ from the ONNX graph's I/O (names, dtypes, ranks, fixed dims)."""
    graph = {(g["name"], g["io"]): g for g in _graph_io(model)}
    engine = {(b["name"], b["io"]): b for b in record["bindings"]}
    if set(graph) != set(engine):
        only = lambda a, b: sorted(f"{io} {name}" for name, io in set(a) - set(b))  # noqa: E731
        return [f"only in the graph: {only(graph, engine)}, only in the engine: {only(engine, graph)}"]
    problems = []
    for key, g in graph.items():
        e = engine[key]
        if g["dtype"] != e["dtype"]:
            problems.append(f"{g['name']}: dtype {e['dtype']} in the engine, {g['dtype']} in the graph")
        if len(g["shape"]) != len(e["shape"]) or any(a >= 0 and a != b for a, b in zip(g["shape"], e["shape"])):
            problems.append(f"{g['name']}: shape {e['shape']} in the engine, {g['shape']} in the graph")
    return problems


def plugin_cache_layers(record: dict) -> list[int | None]:
    """The model layer whose ring cache each plugin layer reads (from its past_key input), sorted."""
    from ltexport.export.contract import PAST_RE

    found = [PAST_RE.match(p.get("past_key") or "") for p in record["plugin_layers"]]
    return sorted(int(m.group(1)) if m else -1 for m in found)


def check_against_graph(record: dict, model, what: str) -> None:
    """Raise unless the engine's bindings are the graph's I/O (`model`: the graph the engine was built from)."""
    problems = binding_mismatches(record, model)
    if problems:
        raise LtexportError(f"the engine's bindings do not match {what}: {'; '.join(problems[:3])}; "
                            "rebuild the engine with `ltexport build`")


def engine_build_info(record: dict) -> dict:
    """What build.json keeps about the engine (the full record is OUT/model.plan.json)."""
    return {
        "builder": record["builder"], "flavor": record["flavor"], "file": record["file"],
        "bytes": record["bytes"], "build_seconds": record["build_seconds"],
        "compute_capabilities": record["compute_capabilities"], "plugin": record["plugin"],
        "bindings": record["bindings"], "profiles": record["profiles"],
        "layers": len(record["layers"]), "plugin_layers": [p["name"] for p in record["plugin_layers"]],
        "executed": False,
    }


# ---------------------------------------------------------------- `ltexport inspect OUT`


def _ranges(shapes: dict) -> list[str]:
    """One line per distinct [min..max] range, naming the inputs that share it."""
    groups: dict = {}
    for name, (lo, opt, hi) in shapes.items():
        groups.setdefault((tuple(lo), tuple(opt), tuple(hi)), []).append(name)
    lines = []
    for (lo, opt, hi), names in groups.items():
        shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]} ({len(names)} inputs)"
        lines.append(f"    {shown}: {list(lo)}..{list(hi)} (opt {list(opt)})")
    return lines


def format_record(record: dict) -> str:
    """The engine's layers, bindings and profiles, from the builder's record."""
    targets = ", ".join(record["compute_capabilities"] or []) or "the GPU it was built on"
    lines = [f"TensorRT engine {record['file']}: {record['bytes'] / 2**20:.1f} MiB, {record['builder']}, for {targets} "
             f"(the builder's record of its network, {record['file']}.json: the engine itself is not deserialized "
             "here; whether it ran is in the report above)"]
    counts = layer_counts(record)
    lines.append(f"layers: {len(record['layers'])} (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    if record["plugin"]:
        lines.append(f"plugin layers (ltexport::SinkWindowAttention): {len(record['plugin_layers'])}")
        for p in record["plugin_layers"]:
            aliased = ", ".join(f"{o} -> {i}" for o, i in p["aliased"].items()) or "none"
            lines.append(f"  {p['name']}: {p['metadata']}; configured for seq {', '.join(configured_seq_ranges(record, p['name']))}; "
                         f"in place: {aliased}; runtime re-creation: {record['round_trip'].get(p['name'], 'not checked')}")
    else:
        lines.append("built without the plugin: the lazy layers are the graph's function body")
    lines.append("bindings:")
    for b in record["bindings"]:
        lines.append(f"  {b['io']:<6} {b['name']:<28} {b['dtype']:<8} {b['shape']}"
                     + (" (shape tensor)" if b["shape_tensor"] else ""))
    lines.append("profiles:")
    for p in record["profiles"]:
        lines.append(f"  {p['name']}:")
        lines += _ranges(p["shapes"])
        lines += [f"    {name} values: {lo}..{hi}" for name, (lo, _, hi) in p["shape_values"].items()]
    return "\n".join(lines)


def read_record(path) -> dict:
    import json
    from pathlib import Path

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LtexportError(f"cannot read {path} ({type(exc).__name__}); rebuild the engine with `ltexport build`") from None
    if not isinstance(record, dict) or record.get("format") != "ltexport-engine-record":
        raise LtexportError(f"{path} is not an ltexport engine record; rebuild the engine with `ltexport build`")
    return record
