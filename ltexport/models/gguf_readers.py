"""One parsed GGUF header per file and process.

Parsing a .gguf header (the `gguf` package's GGUFReader) walks the tokenizer's vocabulary element by
element: about 3.7 s for SmolLM2's 49k tokens. transformers parses the file again for the config, for
the tokenizer and for the weights, and ltexport's own weight reader once more. A reader only maps the
file and reads it, so one per file serves them all: `share()` makes `gguf.GGUFReader` (what
transformers imports at each load) return the reader already parsed for an unchanged file.
"""

from __future__ import annotations

import os

_KEEP = 4  # readers kept per process (each maps its file; parsed fields are small)


def share() -> None:
    """Idempotent; call before anything loads a .gguf file."""
    import gguf

    if getattr(gguf.GGUFReader, "ltexport_shared", False):
        return
    gguf.GGUFReader = _shared(gguf.GGUFReader)


def _shared(original):
    readers: dict[tuple, object] = {}

    def reader(path, mode="r"):
        if mode != "r":
            return original(path, mode)
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        if key not in readers:
            if len(readers) >= _KEEP:
                readers.pop(next(iter(readers)))
            readers[key] = original(path, mode)  # a damaged file raises here and is not kept
        return readers[key]

    reader.ltexport_shared = True
    return reader
