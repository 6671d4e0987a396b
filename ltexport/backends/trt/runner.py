"""A Polygraphy TrtRunner for a built engine, so validation uses the same Comparator path as ONNX Runtime.

Running an engine needs an NVIDIA GPU with its driver, whichever TensorRT built it; without one every entry
point here says so in one line.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from ltexport.backends.trt._tensorrt import TRT, TRT_RTX, import_tensorrt
from ltexport.backends.trt.plugin import build_plugin_library, load_plugin_library
from ltexport.errors import LtexportError
from ltexport.export.contract import ENGINE_FILE


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver), asked without importing any CUDA package."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def require_gpu(flavor: str = TRT) -> None:
    """Raise the one-line error for running an engine where there is no GPU (or no way to run this flavour)."""
    name = "TensorRT-RTX" if flavor == TRT_RTX else "TensorRT"
    if cuda_device_count() == 0:
        raise LtexportError(f"running the {name} engine needs an NVIDIA GPU and its driver, and this machine has none; "
                            "the build's ONNX graph runs here with --backend ort (ONNX Runtime, validated against "
                            "PyTorch at build time)")
    if flavor == TRT_RTX:
        raise LtexportError("ltexport does not run TensorRT-RTX engines (its validation and generation use "
                            "Polygraphy's TrtRunner, i.e. TensorRT proper); build with --backend trt on this machine, "
                            "or use --backend ort")


def trt_runner(engine, *, plugin_library=None, optimization_profile: int | None = None, name: str = "tensorrt",
               flavor: str = TRT):
    """Runner for `engine` (an engine file, or a build directory holding model.plan).

    The plugin library is loaded first (the engine cannot be deserialized without its creator): `plugin_library`,
    else the build's copy, OUT/plugins/libltexport_trt_plugin.so, beside the engine.
    optimization_profile: 0 = prefill (seq 1..max_prompt, also serves seq 1), 1 = decode (seq 1).
    """
    import_tensorrt(flavor)
    path = Path(engine)
    if path.is_dir():
        path = path / ENGINE_FILE
    if not path.is_file():
        raise LtexportError(f"TensorRT engine {path} not found; build it with `ltexport build --backend trt`")
    require_gpu(flavor)
    load_plugin_library(plugin_library or build_plugin_library(path.parent), flavor)
    from polygraphy.backend.trt import EngineFromPath, TrtRunner

    return TrtRunner(EngineFromPath(str(path)), name=name, optimization_profile=optimization_profile)
