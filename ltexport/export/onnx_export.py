"""Export the hybrid model to one ONNX graph that serves prefill and decode.

Graph I/O (DESIGN.md): input_ids [batch, seq], past_len [batch], past_key_values.{i}.key|value;
logits [batch, seq, vocab], present_len [batch] (= past_len + seq, lets servers keep past_len as
state), present.{i}.key|value. Full-layer caches grow along `past_seq`; lazy-layer caches have the
fixed S+W dim. Lazy layers become `ltexport::SinkWindowAttention` nodes with a local function body.

One exporter for every model size: the graph is traced with FakeTensor parameters (shapes and
dtypes, no storage), so the trace never holds weights; they are then streamed one tensor at a time
from the weight source into model.onnx.data (weight_data.py). Peak memory: the graph plus about
one weight tensor, whether the hybrid holds real weights (tiny models, GGUF) or meta ones (a
skeleton of a 7B model).
"""

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ltexport.errors import LtexportError
from ltexport.export.contract import DATA_FILE, DOMAIN, MODEL_FILE, OP_TYPE, io_names
from ltexport.hybrid.caches import empty_caches
from ltexport.hybrid.model import HybridModel

OPSET = 21  # the highest TensorRT 10.x parses; the sink+window function body needs >= 15
_WRAPPER_PREFIX = "hybrid."
# The optimizer tries every rewrite rule on every node. SlicesSplit alone took 10 of its 13 s on
# SmolLM2 and never fired on a decoder (the graphs with and without it are identical).
_SLOW_UNUSED_RULES = {"SlicesSplit"}


class _ExportWrapper(nn.Module):
    """Caches as one list argument, so dynamic shapes can be given per cache tensor."""

    def __init__(self, hybrid: HybridModel):
        super().__init__()
        self.hybrid = hybrid

    def forward(self, input_ids, past_len, past_key_values: list[torch.Tensor]):
        return self.hybrid(input_ids, past_len, *past_key_values)


def export_onnx(hybrid: HybridModel, out_dir: Path, weights=None) -> Path:
    """Trace `hybrid` (parameters real or meta, in the export dtype) and write OUT/model.onnx + data.

    weights: where the checkpoint tensors come from (ltexport.models.weights); None: the hybrid's
    own parameters, which must then be real.
    """
    import onnx

    from ltexport.export import sink_window_onnx as swo
    from ltexport.export import weight_data

    if weights is None:
        weights = _own_weights(hybrid)
    with _fake_parameters(hybrid):
        program = _trace(hybrid)
    placeholders = weight_data.take_placeholders(program.model, hybrid.source_names, weights.names(), _WRAPPER_PREFIX)
    with weight_data.quiet_optimizer(), _without_rules(_SLOW_UNUSED_RULES):
        program.optimize()  # the exporter's own optimizer, run here with weight values hidden
    weight_data.write_data(program.model, placeholders, weights, out_dir / DATA_FILE)
    model = swo.finalize_model(program.model_proto, check=False)  # the proto holds no weight bytes
    _check_nodes(model, hybrid.plan)
    path = out_dir / MODEL_FILE
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _trace(hybrid: HybridModel):
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
        return torch.onnx.export(
            _ExportWrapper(hybrid).eval(), args, dynamo=True, opset_version=OPSET,
            input_names=inputs, output_names=outputs,
            dynamic_shapes=({0: batch, 1: seq}, {0: batch}, cache_dims),
            custom_translation_table=swo.translation_table(), optimize=False, verbose=False,
        )


@contextmanager
def _without_rules(names: set[str]):
    """onnxscript's default rewrite rules minus `names`, while the exporter's optimizer runs."""
    from onnxscript import rewriter

    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:  # another onnxscript layout: keep its defaults
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if getattr(r, "name", None) not in names)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


@contextmanager
def _fake_parameters(module: nn.Module):
    """Swap every parameter for a FakeTensor of its shape and dtype while tracing (tied ones stay
    tied); buffers stay real, so RoPE's inv_freq is exported with its value."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes, swapped = {}, []
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in fakes:
                with mode:
                    fakes[id(param)] = nn.Parameter(torch.empty(param.shape, dtype=param.dtype), requires_grad=False)
            swapped.append((sub, name, param))
            sub._parameters[name] = fakes[id(param)]
    try:
        yield
    finally:
        for sub, name, param in swapped:
            sub._parameters[name] = param


def _own_weights(hybrid: HybridModel):
    from ltexport.models.weights import StateDictWeights

    tensors = {}
    for name, param in hybrid.named_parameters(remove_duplicate=False):
        if param.is_meta:
            raise ValueError(f"{name} has no data: pass `weights` to export a skeleton")
        tensors.update((source, param.detach()) for source in hybrid.source_names[name])
    return StateDictWeights(tensors)


def _grow(cache: torch.Tensor, length: int) -> torch.Tensor:
    shape = list(cache.shape)
    shape[2] = length
    return torch.zeros(shape, dtype=cache.dtype)


def _check_nodes(model, plan) -> None:
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
