"""The one lazy import of TensorRT, in either flavour, with the install hint every entry point reports.

Flavours (the `--backend` names):
- ``trt``: TensorRT proper (`import tensorrt`, >= 10), which builds for and runs on the local GPU.
- ``trt-rtx``: TensorRT for RTX (`import tensorrt_rtx_libs`, which loads the libraries, then
  `import tensorrt_rtx_bindings`). Its builder works without a GPU and compiles ahead of time for the
  compute capabilities it is given; running an engine needs a GPU. Same TensorRT API (IPluginV3,
  strongly typed networks, aliased plugin I/O).
"""

from ltexport.errors import LtexportError, require

TRT, TRT_RTX = "trt", "trt-rtx"
FLAVORS = (TRT, TRT_RTX)
INSTALL_HINT = (
    "install TensorRT 10 (pip install 'ltexport[tensorrt]' on a machine that reaches NVIDIA's index) "
    "and build the plugin: see plugins/README.md"
)
RTX_INSTALL_HINT = (
    "install TensorRT for RTX (pip install 'ltexport[trt-rtx]', or bash scripts/setup.sh) and build the plugin "
    "with plugins/build_trt_rtx.sh"
)
MIN_MAJOR = 10  # TensorRT proper: IPluginV3, strongly typed networks, int64 tensors
_MODULES = {TRT: ("tensorrt",), TRT_RTX: ("tensorrt_rtx_libs", "tensorrt_rtx_bindings")}


def install_hint(flavor: str = TRT) -> str:
    return RTX_INSTALL_HINT if flavor == TRT_RTX else INSTALL_HINT


def import_tensorrt(flavor: str = TRT):
    """Return the TensorRT module of `flavor`, or raise LtexportError naming the fix."""
    if flavor not in FLAVORS:
        raise LtexportError(f"unknown TensorRT flavour {flavor!r}; use one of {', '.join(FLAVORS)}")
    hint = install_hint(flavor)
    module = None
    for name in _MODULES[flavor]:  # tensorrt_rtx_libs first: it loads the libraries the bindings need
        try:
            module = require(name, hint)
        except LtexportError:
            raise
        except Exception as exc:  # e.g. the registry's stub package, or a broken CUDA install
            raise LtexportError(f"{name} cannot be imported ({type(exc).__name__}: {exc}); {hint}") from None
    if flavor == TRT and trt_major(module) < MIN_MAJOR:
        raise LtexportError(f"TensorRT {module.__version__} is too old (ltexport needs >= {MIN_MAJOR}); {hint}")
    return module


def trt_major(trt) -> int:
    try:
        return int(getattr(trt, "__version__", "0").split(".")[0])
    except ValueError:
        return 0


def flavor_of(trt) -> str:
    return TRT_RTX if trt.__name__.startswith("tensorrt_rtx") else TRT


def builder_name(trt) -> str:
    """"TensorRT 10.8.0.43" or "TensorRT-RTX 1.7.1.116"."""
    return f"{'TensorRT-RTX' if flavor_of(trt) == TRT_RTX else 'TensorRT'} {trt.__version__}"


def is_available(flavor: str = TRT) -> bool:
    """True only if TensorRT of `flavor` imports here (>= 10 for TensorRT proper)."""
    try:
        import_tensorrt(flavor)
    except LtexportError:
        return False
    return True
