"""What this machine can do, for `ltexport env`, issue reports and `build --backend auto`.

The convention of `transformers env` / `optimum-cli env`: platform, Python, the versions of the libraries
ltexport drives, CUDA and GPU presence, the TensorRT plugin library, and which `--backend` values work
here (and why not the others). Nothing optional is required: each probe reports what it found.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass

FORMAT, VERSION = "ltexport-env", 1
# distribution name -> the key it is reported under
PACKAGES = {"ltexport": "ltexport", "torch": "torch", "transformers": "transformers", "onnx": "onnx",
            "onnxruntime": "onnxruntime", "onnxruntime-genai": "onnxruntime-genai", "polygraphy": "polygraphy",
            "tensorrt": "tensorrt", "tensorrt-rtx-cu13-bindings": "tensorrt_rtx"}
BACKENDS = ("ort", "trt", "trt-rtx")
_PROBE_TIMEOUT_S = 60


@dataclass
class BackendStatus:
    name: str
    usable: bool
    reason: str

    def as_dict(self) -> dict:
        return {"usable": self.usable, "reason": self.reason}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist, key in PACKAGES.items():
        try:
            found[key] = version(dist)
        except PackageNotFoundError:
            found[key] = None
    return found


def cuda_info() -> dict:
    """CUDA as torch sees it, plus whether an NVIDIA driver is loaded (without importing CUDA libraries)."""
    info = {"driver_loaded": os.path.exists("/proc/driver/nvidia/version"), "torch_cuda_build": None,
            "available": False, "devices": []}
    try:
        import torch
    except ImportError:
        return info
    info["torch_cuda_build"] = torch.version.cuda
    if torch.cuda.is_available():
        info["available"] = True
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def plugin_info() -> dict:
    """The TensorRT plugin library ltexport would use, and whether the dynamic loader accepts it.

    Loaded in a child process: a library built against other TensorRT/CUDA versions can abort its loader."""
    from ltexport.backends.trt.plugin import find_plugin_library
    from ltexport.errors import LtexportError

    try:
        library = find_plugin_library()
    except LtexportError as exc:
        return {"library": None, "built": False, "loadable": False, "detail": str(exc)}
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(library)], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"library": str(library), "built": True, "loadable": False, "detail": "loading it timed out"}
    detail = "loads" if done.returncode == 0 else _last_line(done.stderr) or f"loader exited {done.returncode}"
    return {"library": str(library), "built": True, "loadable": done.returncode == 0, "detail": detail}


def backend_status(name: str, cuda: dict | None = None) -> BackendStatus:
    """Can `--backend name` build (and run) here?"""
    if name == "ort":
        return _ort_status()
    if name == "trt":
        return _trt_status(cuda if cuda is not None else cuda_info())
    if name == "trt-rtx":
        return _trt_rtx_status()
    raise ValueError(f"unknown backend {name!r}")


def _ort_status() -> BackendStatus:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return BackendStatus("ort", False, f"onnxruntime does not import ({exc}); pip install onnxruntime")
    providers = ort.get_available_providers()
    if "CPUExecutionProvider" not in providers:
        return BackendStatus("ort", False, f"onnxruntime has no CPUExecutionProvider ({', '.join(providers)})")
    return BackendStatus("ort", True, f"onnxruntime {ort.__version__} (CPU); builds, validates and runs here")


def _trt_status(cuda: dict) -> BackendStatus:
    from ltexport.backends.trt import is_available

    if not is_available():
        return BackendStatus("trt", False, "TensorRT (tensorrt >= 10) does not import here; it needs NVIDIA's "
                                           "packages and a CUDA GPU (README, TensorRT section)")
    if not cuda["available"]:
        return BackendStatus("trt", False, "tensorrt imports but no CUDA GPU is visible; TensorRT builds and runs "
                                           "engines on a GPU")
    return BackendStatus("trt", True, f"tensorrt imports and {len(cuda['devices'])} GPU(s) are visible")


def _trt_rtx_status() -> BackendStatus:
    from ltexport.backends.trt import install_hint, is_available

    if not is_available("trt-rtx"):
        return BackendStatus("trt-rtx", False, f"TensorRT-RTX does not import here; {install_hint('trt-rtx')}")
    return BackendStatus("trt-rtx", True, "TensorRT-RTX imports: builds engines ahead of time without a GPU "
                                          "(running them needs one); the ONNX graph is validated on ONNX Runtime")


def probe(load_plugin: bool = True) -> dict:
    """Everything `ltexport env` reports, as a JSON-ready dict with a stable schema."""
    cuda = cuda_info()
    return {
        "format": FORMAT, "version": VERSION,
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "memory_gib": _memory_gib()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": package_versions(),
        "cuda": cuda,
        "plugin": plugin_info() if load_plugin else {"library": None, "built": False, "loadable": False,
                                                        "detail": "not probed"},
        "backends": {name: backend_status(name, cuda).as_dict() for name in BACKENDS},
    }


def format_text(info: dict) -> str:
    def value(v):
        return "not installed" if v is None else v

    lines = [f"- Platform: {info['platform']['system']} {info['platform']['release']} {info['platform']['machine']}, "
             f"{info['platform']['cpus']} CPUs, {info['platform']['memory_gib']} GiB",
             f"- Python: {info['python']['version']} ({info['python']['executable']})"]
    lines += [f"- {name}: {value(v)}" for name, v in info["packages"].items()]
    cuda = info["cuda"]
    gpus = ", ".join(cuda["devices"]) or "none"
    lines.append(f"- CUDA: torch build {cuda['torch_cuda_build'] or 'CPU-only'}, NVIDIA driver "
                 f"{'loaded' if cuda['driver_loaded'] else 'not loaded'}, GPUs: {gpus}")
    plugin = info["plugin"]
    lines.append(f"- TensorRT plugin: {plugin['library'] or 'not built'}"
                 + (f" ({'loadable' if plugin['loadable'] else 'not loadable'}: {plugin['detail']})" if plugin["built"]
                    else f" ({plugin['detail']})"))
    lines.append("- Backends (--backend):")
    for name, status in info["backends"].items():
        lines.append(f"    {name:8s} {'yes' if status['usable'] else 'no '}  {status['reason']}")
    return "\n".join(lines)


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
