"""TensorRT backend: engine building (TensorRT proper or TensorRT-RTX) and a Polygraphy runner for the engine.

This package is the only place that imports ``tensorrt`` / ``tensorrt_rtx_bindings``, always lazily: every module
imports without them, and every entry point that needs one raises LtexportError with the install hint when it is
missing.

    from ltexport.backends import trt
    if trt.is_available("trt-rtx"):               # builds without a GPU, ahead of time for SM75..SM121
        record = trt.build_engine("OUT/model.onnx", "OUT/model.plan", flavor="trt-rtx",
                                  plugin_library="plugins/build/libltexport_trt_plugin.so",
                                  profile=trt.Profiles(max_batch=4, max_prompt=2048, max_context=8192))
    runner = trt.trt_runner("OUT")                # a polygraphy TrtRunner (needs a GPU and TensorRT proper)
"""

from ltexport.backends.trt._tensorrt import FLAVORS, INSTALL_HINT, RTX_INSTALL_HINT, TRT, TRT_RTX, import_tensorrt
from ltexport.backends.trt._tensorrt import install_hint, is_available
from ltexport.backends.trt.engine import DEFAULT_COMPUTE_CAPABILITIES, build_engine, build_engine_for_build_dir
from ltexport.backends.trt.engine import compute_capabilities_for
from ltexport.backends.trt.graph import count_sink_window_nodes, lazy_cache_lengths, with_sequence_start
from ltexport.backends.trt.graph import without_sink_window_functions
from ltexport.backends.trt.plugin import (
    PLUGIN_ENV,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    build_plugin_library,
    find_plugin_library,
    load_plugin_library,
)
from ltexport.backends.trt.profiles import ProfileShapes, Profiles, compute_profiles
from ltexport.backends.trt.record import check_against_graph, engine_build_info
from ltexport.backends.trt.runner import cuda_device_count, require_gpu, trt_runner
from ltexport.export.contract import ENGINE_FILE, ENGINE_RECORD_FILE

__all__ = [
    "DEFAULT_COMPUTE_CAPABILITIES",
    "ENGINE_FILE",
    "ENGINE_RECORD_FILE",
    "FLAVORS",
    "INSTALL_HINT",
    "PLUGIN_ENV",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "RTX_INSTALL_HINT",
    "TRT",
    "TRT_RTX",
    "ProfileShapes",
    "Profiles",
    "build_engine",
    "build_engine_for_build_dir",
    "build_plugin_library",
    "check_against_graph",
    "compute_capabilities_for",
    "compute_profiles",
    "count_sink_window_nodes",
    "cuda_device_count",
    "engine_build_info",
    "find_plugin_library",
    "import_tensorrt",
    "install_hint",
    "is_available",
    "lazy_cache_lengths",
    "load_plugin_library",
    "require_gpu",
    "trt_runner",
    "with_sequence_start",
    "without_sink_window_functions",
]
