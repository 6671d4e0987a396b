"""The one lazy import of tensorrt, with the install hint every entry point reports."""

from ltexport.errors import LtexportError, require

INSTALL_HINT = (
    "install TensorRT 10 (pip install 'ltexport[tensorrt]' on a machine that reaches NVIDIA's index) "
    "and build the plugin: see plugins/README.md"
)
MIN_MAJOR = 10  # IPluginV3, strongly typed networks, int64 tensors


def import_tensorrt():
    """Return the tensorrt module, or raise LtexportError naming the fix."""
    try:
        trt = require("tensorrt", INSTALL_HINT)
    except LtexportError:
        raise
    except Exception as exc:  # e.g. the registry's stub package, or a broken CUDA install
        raise LtexportError(f"tensorrt cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    version = getattr(trt, "__version__", "0")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_MAJOR:
        raise LtexportError(f"TensorRT {version} is too old (ltexport needs >= {MIN_MAJOR}); {INSTALL_HINT}")
    return trt


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def is_available() -> bool:
    """True only if a usable tensorrt (>= 10) imports here."""
    try:
        import_tensorrt()
    except LtexportError:
        return False
    return True
