"""TensorRT backend (the only package that imports tensorrt, lazily)."""

import importlib.util

INSTALL_HINT = "install TensorRT 10 on a CUDA machine (pip install 'ltexport[tensorrt]') and build the plugin: see plugins/README.md"


def is_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None
