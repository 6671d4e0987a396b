"""A Polygraphy TrtRunner for a built engine, so validation uses the same Comparator path as ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from ltexport.backends.trt._tensorrt import import_tensorrt
from ltexport.backends.trt.plugin import load_plugin_library
from ltexport.errors import LtexportError
from ltexport.export.contract import ENGINE_FILE


def trt_runner(engine, *, plugin_library=None, optimization_profile: int | None = None, name: str = "tensorrt"):
    """Runner for `engine` (an engine file, or a build directory holding model.plan).

    The plugin library is loaded first (the engine cannot be deserialized without its creator).
    optimization_profile: 0 = prefill (seq 1..max_prompt, also serves seq 1), 1 = decode (seq 1).
    """
    import_tensorrt()
    path = Path(engine)
    if path.is_dir():
        path = path / ENGINE_FILE
    if not path.is_file():
        raise LtexportError(f"TensorRT engine {path} not found; build it with `ltexport build --backend trt`")
    load_plugin_library(plugin_library)
    from polygraphy.backend.trt import EngineFromPath, TrtRunner

    return TrtRunner(EngineFromPath(str(path)), name=name, optimization_profile=optimization_profile)
