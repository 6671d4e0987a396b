"""The library imports without TensorRT (either flavour), CUDA, tritonclient or onnxruntime-genai."""

import subprocess
import sys

SCRIPT = """
import sys
for name in ("tensorrt", "tensorrt_rtx_libs", "tensorrt_rtx_bindings", "tritonclient", "tritonclient.grpc", "pycuda",
             "cuda", "onnxruntime_genai"):
    sys.modules[name] = None  # makes `import name` raise ImportError
import importlib, pkgutil, ltexport, ltexport.cli
for mod in pkgutil.walk_packages(ltexport.__path__, "ltexport."):
    if mod.name.endswith("__main__"):
        continue
    importlib.import_module(mod.name)
print("ok")
"""


def test_every_module_imports_without_optional_dependencies():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
