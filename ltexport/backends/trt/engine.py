"""Build a TensorRT engine from the exported ONNX graph, with the sink+window plugin for the lazy layers."""

from __future__ import annotations

import shutil
from pathlib import Path

from ltexport.backends.trt._tensorrt import import_tensorrt, trt_major
from ltexport.backends.trt.graph import count_sink_window_nodes, lazy_cache_lengths, without_sink_window_functions
from ltexport.backends.trt.plugin import find_plugin_library, load_plugin_library
from ltexport.export.contract import ENGINE_FILE, MODEL_FILE, PLUGIN_NAME, PLUGIN_NAMESPACE, is_cache_input
from ltexport.backends.trt.profiles import SHAPE_INPUT_VALUES, Profiles, compute_profiles
from ltexport.errors import LtexportError
from ltexport.staging import write_bytes_atomic

ENGINE_SUFFIX = ".engine"
TIMING_CACHE_SUFFIX = ".timing.cache"


def count_plugin_layers(network, trt) -> int:
    """Plugin layers of the network that are ltexport::SinkWindowAttention."""
    count = 0
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
        count += 1
    return count


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
    # The stripped model has no SinkWindowAttention function body: its nodes must resolve to the plugin.
    # `path` lets the parser find external weights next to the original file.
    if not parser.parse(without_sink_window_functions(model).SerializeToString(), str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(error.desc() if hasattr(error, "desc") else str(error))
        first = (errors or ["unknown error"])[0].strip().splitlines()[0]
        hint = "is the plugin loaded?" if PLUGIN_NAME in " ".join(errors) else "see the TensorRT log above"
        raise LtexportError(f"TensorRT's ONNX parser rejected {onnx_path}: {first} ({len(errors)} error(s); {hint})")


def build_engine(onnx_path, engine_path=None, *, plugin_library=None, profile: Profiles | None = None,
                 timing_cache_path=None, sequence_start: bool = False) -> Path:
    """Build a strongly typed engine for `onnx_path` and write it (default: next to the ONNX, `.engine`).

    plugin_library: the plugin .so (default: find_plugin_library()). profile: the shape ranges, turned into a
    prefill and a decode optimization profile. timing_cache_path: read if present, written after the build
    (default: next to the engine). sequence_start: add Triton's `seq_start` control input first (an
    engine cannot be changed later; see ltexport/export/sequence_start.py). Returns the engine path.
    """
    trt = import_tensorrt()
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise LtexportError(f"{onnx_path} does not exist; export the model first (ltexport build)")
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(ENGINE_SUFFIX)
    timing_cache_path = Path(timing_cache_path) if timing_cache_path else engine_path.with_suffix(TIMING_CACHE_SUFFIX)
    profile = profile or Profiles()
    load_plugin_library(plugin_library)  # before parsing: the parser looks creators up in the registry

    model = onnx.load(str(onnx_path), load_external_data=False)
    if sequence_start:
        _add_sequence_start(model)
    expected = count_sink_window_nodes(model)
    shapes = compute_profiles(model, profile)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) < 11:  # always strongly typed from TensorRT 11 on (the flag is deprecated there)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(trt, network, logger, model, onnx_path)
    found = count_plugin_layers(network, trt)
    if found != expected:
        raise LtexportError(
            f"{onnx_path} has {expected} {PLUGIN_NAME} node(s) but the TensorRT network has {found} plugin layer(s): "
            "the lazy layers were not mapped to the plugin; rebuild the plugin for this TensorRT version"
        )

    config = builder.create_builder_config()
    if hasattr(trt.PreviewFeature, "ALIASED_PLUGIN_IO_10_03"):
        # Lets the plugin update the ring cache in place (present_* aliased to past_*), TensorRT >= 10.3.
        config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    values = shape_input_values(network, onnx_path)
    for ps in shapes:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in ps.shapes.items():
            opt_profile.set_shape(name, lo, opt, hi)
        for name, (lo, opt, hi) in values.items():
            opt_profile.set_shape_input(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(timing_cache_path.read_bytes() if timing_cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LtexportError(f"TensorRT could not build an engine for {onnx_path}; see the TensorRT log above")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine_path, serialized)
    write_bytes_atomic(timing_cache_path, config.get_timing_cache().serialize())
    return engine_path


def build_engine_for_build_dir(out_dir, plan, *, plugin_library=None, profile: Profiles | None = None) -> Path:
    """`ltexport build --backend trt`: OUT/model.onnx -> OUT/model.plan (with `seq_start`, so the engine
    is servable by Triton) and OUT/plugins/<plugin>.so; profile default: ranges sized for the validation run."""
    import_tensorrt()  # TensorRT's absence is the first thing to report
    out_dir = Path(out_dir)
    library = find_plugin_library(plugin_library)
    (out_dir / "plugins").mkdir(exist_ok=True)
    shutil.copy2(library, out_dir / "plugins" / library.name)
    profile = profile or Profiles.for_validation(plan.sink, plan.window)
    return build_engine(out_dir / MODEL_FILE, out_dir / ENGINE_FILE, plugin_library=library,
                        profile=profile, sequence_start=True)


def _add_sequence_start(model) -> None:
    from ltexport.export.sequence_start import add_sequence_start

    lazy = lazy_cache_lengths(model)
    growing = [i.name for i in model.graph.input if is_cache_input(i.name) and i.name not in lazy]
    add_sequence_start(model, growing)
