"""ltexport: compile long-context LLMs into LightTransfer hybrids.

Importable without TensorRT, CUDA or tritonclient: those are imported lazily where used.
Nothing ltexport does touches the network: the Hugging Face libraries are switched offline here,
before any of them is imported (a user who sets these variables to 0 asks for the network).
"""

import os

for _switch in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_switch, "1")

__version__ = "0.1.0"
