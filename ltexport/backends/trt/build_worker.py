"""The TensorRT build itself, in a child process: `python -m ltexport.backends.trt.build_worker REQUEST.json`.

engine.build_engine starts it. A child, because TensorRT's parser and builder can end the process
(std::terminate) on input they cannot handle, and because TensorRT-RTX's parser needs an environment the
parent sets up (see engine.py). The request names the ONNX graph, the engine and record files to write, the
plugin library (or none: the lazy layers are then the graph's function body), the profile ranges and the
compute capabilities; the result file gets {"ok": true, "record": ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ltexport.backends.trt import record as rec
from ltexport.backends.trt._tensorrt import TRT_RTX, builder_name, flavor_of, import_tensorrt, trt_major
from ltexport.backends.trt.graph import count_sink_window_nodes, with_sequence_start, without_sink_window_functions
from ltexport.backends.trt.plugin import load_plugin_library
from ltexport.backends.trt.profiles import SHAPE_INPUT_VALUES, Profiles, compute_profiles
from ltexport.errors import LtexportError
from ltexport.export.contract import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from ltexport.staging import write_bytes_atomic, write_text_atomic

# Outputs of the plugin: which past_* input each aliases (present_key -> past_key, present_value -> past_value).
OUTPUT_NAMES = ("output", "present_key", "present_value")
INPUT_NAMES = ("query", "key", "value", "past_key", "past_value", "past_len")


def make_logger(trt):
    """TensorRT's warnings and errors to stderr; the plugin's kVERBOSE trace lines kept."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.trace: list[str] = []

        def log(self, severity, msg):
            if msg.startswith(rec.TRACE_PREFIX):
                if severity == trt.ILogger.Severity.VERBOSE:
                    self.trace.append(msg[len(rec.TRACE_PREFIX):])
                    return
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"[TensorRT] {msg}", file=sys.stderr, flush=True)

    return Logger()


def count_plugin_layers(network, trt) -> int:
    """Plugin layers of the network that are ltexport::SinkWindowAttention."""
    return len(_plugin_layers(network, trt))


def _plugin_layers(network, trt) -> list:
    found = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.PLUGIN_V3:
            continue
        # Identify the plugin where the bindings can (get_capability_interface returns None before TRT 10.4,
        # then every PLUGIN_V3 layer counts).
        try:
            layer.__class__ = trt.IPluginV3Layer
            core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            if core.plugin_name != PLUGIN_NAME or core.plugin_namespace != PLUGIN_NAMESPACE:
                continue
        except Exception:  # noqa: BLE001 - introspection is best effort
            pass
        found.append(layer)
    return found


def shape_input_values(network, onnx_path) -> dict:
    """Value ranges for the network inputs TensorRT made shape tensors (it refuses a profile without them)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shape_inputs = [t.name for t in inputs if t.is_shape_tensor]
    unknown = [name for name in shape_inputs if name not in SHAPE_INPUT_VALUES]
    if unknown:
        raise LtexportError(f"{onnx_path}: TensorRT computes shapes from the input(s) {unknown}, whose value range "
                            "ltexport does not know; re-export the graph with `ltexport build`")
    return {name: SHAPE_INPUT_VALUES[name] for name in shape_inputs}


def _parse(trt, network, logger, model, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    # `path` lets the parser find external weights next to the original file.
    if not parser.parse(model.SerializeToString(), str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(error.desc() if hasattr(error, "desc") else str(error))
        first = (errors or ["unknown error"])[0].strip().splitlines()[0]
        hint = "is the plugin loaded?" if PLUGIN_NAME in " ".join(errors) else "see the TensorRT log above"
        raise LtexportError(f"TensorRT's ONNX parser rejected {onnx_path}: {first} ({len(errors)} error(s); {hint})")


def _network_flags(trt) -> int:
    # Always strongly typed from TensorRT 11 on (the flag is deprecated there); TensorRT-RTX takes the flag.
    if flavor_of(trt) == TRT_RTX or trt_major(trt) < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _configure(trt, builder, network, config, shapes, onnx_path, capabilities) -> list[dict]:
    if hasattr(trt.PreviewFeature, "ALIASED_PLUGIN_IO_10_03"):
        # Lets the plugin update the ring cache in place (present_* aliased to past_*), TensorRT >= 10.3.
        config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    if capabilities:  # TensorRT-RTX: ahead of time, for these GPUs (no GPU needed here)
        config.num_compute_capabilities = len(capabilities)
        for i, name in enumerate(capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
    values = shape_input_values(network, onnx_path)
    profiles = []
    for ps in shapes:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in ps.shapes.items():
            opt_profile.set_shape(name, lo, opt, hi)
        for name, (lo, opt, hi) in values.items():
            opt_profile.set_shape_input(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
        profiles.append(rec.profile(ps.name, opt_profile, network))
    return profiles


def _plugin_layer_records(trt, network, calls: dict) -> list[dict]:
    """Each plugin layer: its config as the plugin reports it (built from the ONNX node's fields) and the outputs
    TensorRT asked it to alias (from its getAliasedInput trace: Python cannot call that on a C++ plugin)."""
    out = []
    for layer in _plugin_layers(network, trt):
        build = layer.plugin.get_capability_interface(trt.PluginCapabilityType.BUILD)
        aliased = {OUTPUT_NAMES[int(c["output"])]: INPUT_NAMES[int(c["input"])]
                   for c in calls.get(layer.name, {}).get("getAliasedInput", []) if int(c["input"]) >= 0}
        past_key = layer.get_input(INPUT_NAMES.index("past_key"))
        out.append({"name": layer.name, "metadata": build.metadata_string, "aliased": aliased,
                    "past_key": past_key.name if past_key is not None else None})
    return out


def _round_trip(trt, plugin_layers: list[dict], calls: dict) -> dict:
    """Re-create each plugin with its creator in the runtime phase from the fields it serialized into the engine
    (as its getFieldsToSerialize trace reports them) and compare configs: what deserializing the engine would do,
    which TensorRT-RTX cannot without a GPU."""
    import numpy as np

    creator = trt.get_plugin_registry().get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    results = {}
    for layer in plugin_layers:
        serialized = calls.get(layer["name"], {}).get("getFieldsToSerialize", [])
        if len(serialized) != 1:
            results[layer["name"]] = f"not checked: {len(serialized)} distinct serialized field sets"
            continue
        f = serialized[0]
        fields = trt.PluginFieldCollection([
            trt.PluginField("sink", np.array([int(f["sink"])], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("window", np.array([int(f["window"])], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("scale", np.array([float(f["scale"])], np.float32), trt.PluginFieldType.FLOAT32),
            trt.PluginField("prefill", np.frombuffer(f["prefill"].encode() + b"\0", np.int8), trt.PluginFieldType.CHAR),
        ])
        plugin = creator.create_plugin(layer["name"], fields, trt.TensorRTPhase.RUNTIME)
        again = None if plugin is None else plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).metadata_string
        results[layer["name"]] = "same config" if again == layer["metadata"] else f"differs: {again!r}"
    return results


def build(request: dict) -> dict:
    """Parse, configure and build; write the engine and its record; return the record."""
    flavor = request["flavor"]
    trt = import_tensorrt(flavor)
    import onnx

    onnx_path, engine_path = Path(request["onnx"]), Path(request["engine"])
    logger = make_logger(trt)
    plugin = request["plugin"] is not None
    if plugin:
        load_plugin_library(request["plugin"], flavor)  # before parsing: the parser looks creators up in the registry
    model = onnx.load(str(onnx_path), load_external_data=False)
    if request["sequence_start"]:
        with_sequence_start(model)
    expected = count_sink_window_nodes(model) if plugin else 0
    shapes = compute_profiles(model, Profiles(**request["profile"]))

    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    # With the plugin, a copy without the function body: the nodes can only become the plugin (graph.py).
    _parse(trt, network, logger, without_sink_window_functions(model) if plugin else model, onnx_path)
    found = count_plugin_layers(network, trt)
    if found != expected:
        fix = ("rebuild the plugin for this TensorRT version" if plugin
               else "the parser did not use the graph's function body; unregister the plugin")
        raise LtexportError(f"{onnx_path} has {count_sink_window_nodes(model)} {PLUGIN_NAME} node(s) but the TensorRT "
                            f"network has {found} plugin layer(s): {fix}")

    config = builder.create_builder_config()
    profiles = _configure(trt, builder, network, config, shapes, onnx_path, request["compute_capabilities"])
    cache_path = request.get("timing_cache")
    if cache_path and flavor != TRT_RTX:  # TensorRT-RTX's timing cache is a no-op (deprecated in 1.2)
        cache_path = Path(cache_path)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise LtexportError(f"TensorRT could not build an engine for {onnx_path}; see the TensorRT log above")
    write_bytes_atomic(engine_path, serialized)
    if cache_path and flavor != TRT_RTX:
        write_bytes_atomic(cache_path, config.get_timing_cache().serialize())

    calls = rec.parse_trace(logger.trace)
    plugin_layers = _plugin_layer_records(trt, network, calls)
    round_trip = _round_trip(trt, plugin_layers, calls) if plugin else {}
    record = {
        "format": "ltexport-engine-record", "version": 1, "builder": builder_name(trt), "flavor": flavor,
        "file": engine_path.name, "bytes": serialized.nbytes, "build_seconds": round(seconds, 2),
        "compute_capabilities": request["compute_capabilities"], "plugin": plugin,
        "bindings": rec.bindings(network), "profiles": profiles, "plugin_layers": plugin_layers,
        "plugin_calls": rec.parse_trace(logger.trace), "round_trip": round_trip,  # the trace now has the round trip too
        "deserialized": False, "layers": rec.layers(network, trt),
    }
    write_text_atomic(Path(request["record"]), json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    try:
        result = {"ok": True, "record": build(request)}
    except LtexportError as exc:
        result = {"ok": False, "error": str(exc)}
    write_text_atomic(Path(request["result"]), json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
