"""ltexport: compile long-context LLMs into LightTransfer hybrids.

Importable without TensorRT, CUDA or tritonclient: those are imported lazily where used.
"""

__version__ = "0.1.0"
