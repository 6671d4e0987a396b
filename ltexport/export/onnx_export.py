"""Export the hybrid model to one ONNX graph that serves prefill and decode.

Graph I/O (DESIGN.md): input_ids [batch, seq], past_len [batch], past_key_values.{i}.key|value;
logits [batch, seq, vocab], present_len [batch] (= past_len + seq, lets servers keep past_len as
state), present.{i}.key|value. Full-layer caches grow along `past_seq`; lazy-layer caches have the
fixed S+W dim. Lazy layers become `ltexport::SinkWindowAttention` nodes with a local function body.
"""

from pathlib import Path

import torch
from torch import nn

from ltexport.errors import LtexportError
from ltexport.hybrid.caches import INPUT_PREFIX, OUTPUT_PREFIX, cache_names, empty_caches
from ltexport.hybrid.model import HybridModel

OPSET = 21  # the highest TensorRT 10.x parses; the sink+window function body needs >= 19
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


class _ExportWrapper(nn.Module):
    """Caches as one list argument, so dynamic shapes can be given per cache tensor."""

    def __init__(self, hybrid: HybridModel):
        super().__init__()
        self.hybrid = hybrid

    def forward(self, input_ids, past_len, past_key_values: list[torch.Tensor]):
        return self.hybrid(input_ids, past_len, *past_key_values)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "past_len", *cache_names(num_layers, INPUT_PREFIX)]
    outputs = ["logits", "present_len", *cache_names(num_layers, OUTPUT_PREFIX)]
    return inputs, outputs


def export_onnx(hybrid: HybridModel, out_dir: Path) -> Path:
    """Trace `hybrid` (already in its export dtype) and write OUT/model.onnx + external data."""
    import onnx

    from ltexport.export import sink_window_onnx as swo

    plan = hybrid.plan
    dtype = hybrid.lm_head.weight.dtype
    batch, seq, past = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=1), torch.export.Dim("past_seq", min=0)
    # Example sizes > 1: torch.export specialises dims it sees as 0 or 1.
    caches = [_grow(c, 3) if c.shape[2] == 0 else c for c in empty_caches(plan, 2, dtype)]
    cache_dims = [{0: batch, 2: past} if not plan.is_lazy(i // 2) else {0: batch} for i in range(len(caches))]
    args = (torch.ones(2, 4, dtype=torch.long), torch.full((2,), 3, dtype=torch.long), caches)
    inputs, outputs = io_names(plan.num_layers)
    swo.register_schema()
    with torch.no_grad():
        program = torch.onnx.export(
            _ExportWrapper(hybrid).eval(), args, dynamo=True, opset_version=OPSET,
            input_names=inputs, output_names=outputs,
            dynamic_shapes=({0: batch, 1: seq}, {0: batch}, cache_dims),
            custom_translation_table=swo.translation_table(), optimize=True, verbose=False,
        )
    model = swo.finalize_model(program.model_proto)
    _check_nodes(model, plan)
    path = out_dir / MODEL_FILE
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _grow(cache: torch.Tensor, length: int) -> torch.Tensor:
    shape = list(cache.shape)
    shape[2] = length
    return torch.zeros(shape, dtype=cache.dtype)


def _check_nodes(model, plan) -> None:
    from ltexport.export.sink_window_onnx import DOMAIN, OP_TYPE

    found = sum(1 for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE)
    if found != len(plan.lazy_layers):
        raise RuntimeError(f"export produced {found} {OP_TYPE} nodes for {len(plan.lazy_layers)} lazy layers")


def load_checked(path: Path):
    """Load and check an exported model; a damaged file is a user error with a fix."""
    import onnx

    from ltexport.export import sink_window_onnx as swo

    swo.register_schema()
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LtexportError(f"{path} is not a valid ONNX model ({line}); rebuild it with `ltexport build`") from None
    return model
