"""Triton Inference Server packaging: a model repository entry with the KV caches as implicit state.

Importable without tritonclient (only the tests and examples/ use it).
"""

from ltexport.triton.build_io import BuildIO, CacheState, read_build
from ltexport.export.sequence_start import add_sequence_start
from ltexport.triton.memory import StateMemory, cache_bytes, state_memory_per_sequence
from ltexport.triton.package import TritonPackage, check_model_name, package_triton

__all__ = [
    "BuildIO",
    "CacheState",
    "StateMemory",
    "TritonPackage",
    "add_sequence_start",
    "cache_bytes",
    "check_model_name",
    "package_triton",
    "read_build",
    "state_memory_per_sequence",
]
