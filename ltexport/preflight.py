"""Before a build starts: will its output fit on disk, and its validation in memory?

Estimates come from the config alone (a skeleton with meta parameters: exact shapes, no memory).
"""

import shutil
from pathlib import Path

from ltexport.errors import LtexportError

GB = 1e9
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Python, torch, ONNX Runtime and the graph itself, measured at about 1 GB on tiny models.
RUNTIME_BASE = 1.5 * GB
# model.onnx, plan, report, tokenizer and Polygraphy JSON beside the weights.
DISK_MARGIN = 256 * 2**20


def parameter_count(source, num_layers: int | None = None) -> int:
    from ltexport.models.skeleton import parameter_count as count

    return count(source.skeleton("fp32", num_layers))


def weight_bytes(params: int, dtype: str) -> int:
    return params * BYTES[dtype]


def validation_memory(params: int, dtype: str, tokens: int, vocab: int, heads: int) -> float:
    """Peak bytes of validating a model of `params` parameters.

    The PyTorch reference holds the weights in `dtype`; ONNX Runtime holds them again, and on CPU
    computes fp16/bf16 ops in fp32 (it inserts Casts and folds them into fp32 weight copies), so
    allow both copies there. Activations: prefill logits [tokens, vocab] in fp32, held by both
    runners and the comparison (x4), and one layer's attention scores [heads, tokens, tokens] (x2).
    """
    b = BYTES[dtype]
    backend = b + (4 if b < 4 else 0)
    activations = tokens * vocab * 4 * 4 + heads * tokens * tokens * 4 * 2
    return params * (b + backend) + activations + RUNTIME_BASE


def available_memory() -> float:
    """MemAvailable (free + reclaimable page cache), what a new process can use without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_disk(out: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when the filesystem of OUT's parent lacks `needed` bytes."""
    parent = Path(out).expanduser().absolute().parent
    if not parent.is_dir():
        raise LtexportError(f"directory {parent} does not exist; create it first")
    free = shutil.disk_usage(parent).free
    if free < needed + DISK_MARGIN:
        raise LtexportError(
            f"not enough disk space for {out}: {what} needs {(needed + DISK_MARGIN) / GB:.1f} GB but "
            f"{parent} has {free / GB:.1f} GB free; free space or choose another -o"
        )
