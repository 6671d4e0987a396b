"""One exception type for user errors; the CLI turns it into one stderr line and exit code 1."""


class LtexportError(Exception):
    """A problem the user can fix (bad input, missing file, failed validation).

    The message names the problem and the fix in one line.
    """


def require(module: str, hint: str):
    """Import an optional dependency lazily, or raise LtexportError with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LtexportError(f"{module} is not installed ({exc.__class__.__name__}: {exc}); {hint}") from None
