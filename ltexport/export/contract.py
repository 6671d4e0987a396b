"""The graph contract: every name the exported graph, its plugin and a build directory share.

One module owns them (DESIGN.md §3, §6); hybrid, export, backends, validate and triton import
these names instead of spelling them again. Importing this module loads nothing heavy.

Graph I/O: inputs `input_ids` [batch, seq] int64, `past_len` [batch] int64,
`past_key_values.{i}.key|value`; outputs `logits` [batch, seq, vocab], `present_len` [batch],
`present.{i}.key|value`. Graphs built for Triton or TensorRT also take `seq_start` int32 [1]
(ltexport.export.sequence_start).
"""

import re
from pathlib import Path

# ---------------------------------------------------------------- graph I/O
INPUT_IDS = "input_ids"
PAST_LEN = "past_len"
LOGITS = "logits"
PRESENT_LEN = "present_len"
INPUT_PREFIX = "past_key_values"
OUTPUT_PREFIX = "present"
# Triton's sequence-start control input (1 on a sequence's first request; 0 changes nothing).
SEQ_START = "seq_start"

PAST_RE = re.compile(rf"^{INPUT_PREFIX}\.(\d+)\.(key|value)$")
PRESENT_RE = re.compile(rf"^{OUTPUT_PREFIX}\.(\d+)\.(key|value)$")


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """`past_key_values.{i}.key|value` for inputs, `present.{i}.key|value` for outputs."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """The exported graph's input and output names, in order."""
    inputs = [INPUT_IDS, PAST_LEN, *cache_names(num_layers, INPUT_PREFIX)]
    outputs = [LOGITS, PRESENT_LEN, *cache_names(num_layers, OUTPUT_PREFIX)]
    return inputs, outputs


def is_cache_input(name: str) -> bool:
    return name.startswith(INPUT_PREFIX + ".")


def is_cache_output(name: str) -> bool:
    return name.startswith(OUTPUT_PREFIX + ".")


def present_name(past_name: str) -> str:
    """`past_key_values.3.key` -> `present.3.key`."""
    return OUTPUT_PREFIX + past_name[len(INPUT_PREFIX):]


def past_name(present: str) -> str:
    """`present.3.key` -> `past_key_values.3.key`."""
    return INPUT_PREFIX + present[len(OUTPUT_PREFIX):]


# ---------------------------------------------------------------- the custom op and its plugin
# Must match plugins/src/sink_window_fields.h.
DOMAIN = "ltexport"
OP_TYPE = "SinkWindowAttention"
OP_VERSION = 1
PLUGIN_NAME = OP_TYPE
PLUGIN_NAMESPACE = "ltexport"
PLUGIN_VERSION = "1"

# ---------------------------------------------------------------- files of a build directory
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
ENGINE_FILE = "model.plan"
# What the TensorRT builder saw (bindings, profiles, layers, the plugin's build-time calls), written
# with the engine: `ltexport inspect` reads it where the engine cannot be deserialized (no GPU).
ENGINE_RECORD_FILE = ENGINE_FILE + ".json"
# The plugin library (static registration; what Triton, polygraphy --plugins and LD_PRELOAD load;
# a TensorRT-RTX build's registers through getCreators) and where a build keeps its copy.
PLUGIN_LIBRARY = "libltexport_trt_plugin.so"
PLUGIN_DIR = "plugins"


def build_plugin_path(build_dir) -> Path:
    """The build's copy of the plugin library: OUT/plugins/libltexport_trt_plugin.so."""
    return Path(build_dir) / PLUGIN_DIR / PLUGIN_LIBRARY


# ---------------------------------------------------------------- the ONNX Runtime graph (export/ort_lowering.py)
# A second graph beside model.onnx, built for ONNX Runtime's CPU kernels and read in place through
# IOBinding (backends/ort/fast.py). It reads the same model.onnx.data and has the same I/O names, with
# these cache layouts:
# - full layers: [batch, kv_heads, capacity, head_dim], a static buffer the caller sizes; row b's
#   position j sits in slot j (valid while j < past_len[b]); new tokens are written at past_len[b].
# - lazy layers: [batch, kv_heads, sink + window + RING_SCRATCH, head_dim]: slots 0..S+W-1 as in
#   model.onnx; the last slot takes the writes of tokens superseded within the same call.
# Present caches are the past buffers updated in place: bind each present output to its past input.
ORT_MODEL_FILE = "model.ort.onnx"
ORT_GRAPH_KEY = "ltexport.ort_graph"  # model metadata: JSON {"version", "sink", "window", "lazy_layers", ...}
CAPACITY_DIM = "capacity"
RING_SCRATCH = 1
# Input [1] int64: logits of the last N positions only (0 = every position).
NUM_LOGITS = "num_logits"
