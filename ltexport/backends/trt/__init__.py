"""TensorRT backend: engine building and a Polygraphy runner for the exported graph.

This package is the only place that imports ``tensorrt``, always lazily: every module imports without it, and
every entry point that needs it raises LtexportError with INSTALL_HINT when it is missing.

    from ltexport.backends import trt
    if trt.is_available():
        engine = trt.build_engine("OUT/model.onnx", plugin_library="plugins/build/libltexport_trt_plugin.so",
                                  profile=trt.Profiles(max_batch=4, max_prompt=2048, max_context=8192))
        runner = trt.trt_runner(engine, plugin_library=...)   # a polygraphy TrtRunner
"""

from ltexport.backends.trt._tensorrt import INSTALL_HINT, import_tensorrt, is_available
from ltexport.backends.trt.engine import build_engine, build_engine_for_build_dir, count_plugin_layers
from ltexport.backends.trt.graph import count_sink_window_nodes, lazy_cache_lengths, without_sink_window_functions
from ltexport.backends.trt.plugin import (
    PLUGIN_ENV,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    find_plugin_library,
    load_plugin_library,
)
from ltexport.backends.trt.profiles import ProfileShapes, Profiles, compute_profiles
from ltexport.backends.trt.runner import trt_runner
from ltexport.export.contract import ENGINE_FILE

__all__ = [
    "ENGINE_FILE",
    "INSTALL_HINT",
    "PLUGIN_ENV",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "ProfileShapes",
    "Profiles",
    "build_engine",
    "build_engine_for_build_dir",
    "compute_profiles",
    "count_plugin_layers",
    "count_sink_window_nodes",
    "find_plugin_library",
    "import_tensorrt",
    "is_available",
    "lazy_cache_lengths",
    "load_plugin_library",
    "trt_runner",
    "without_sink_window_functions",
]
