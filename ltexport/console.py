"""What the console shows: ltexport's own lines and progress bars; other libraries' known noise only with -v.

Each known message is silenced where it starts (a warnings filter on its text, a logging filter on the
logger that emits it, the progress-bar switch of the library that draws it), so anything new or
unexpected still shows. `configure` runs before the libraries are imported (the CLI's group callback)
and exports LTEXPORT_VERBOSE so worker processes (bench, eval) make the same choice.
"""

import logging
import os
import re
import warnings

VERBOSE_ENV = "LTEXPORT_VERBOSE"

# (category, message regex): warnings third-party code raises on every run, which say nothing to a user.
KNOWN_WARNINGS = (
    # torch.export's pytree (copyreg) on transformers' output classes
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # torch.onnx: two dynamic dims that torch.export proves equal share one name
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints"),
    # transformers 5.2x renames the cache keyword of forward()
    (FutureWarning, r"`past_key_values` is deprecated and will be removed"),
)
# logger name -> message regex
KNOWN_LOG_RECORDS = {
    "torch.onnx._internal.exporter._registration": r"torchvision is not installed",
}
# Environment switches the libraries read: progress bars (huggingface_hub's, transformers' through it, and
# every bar drawn with tqdm's defaults, e.g. transformers' "Converting and de-quantizing GGUF tensors";
# ltexport's own bars pass `disable` explicitly) and transformers' advisory logging.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def configure(verbose: bool | None = None) -> None:
    """Silence the known third-party noise unless `verbose` (default: $LTEXPORT_VERBOSE)."""
    verbose = is_verbose() if verbose is None else verbose
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for category, pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, pattern in KNOWN_LOG_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
