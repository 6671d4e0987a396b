"""Weights of a traced graph: from fake placeholders to ONNX external data, one tensor at a time.

The graph is traced with FakeTensor parameters, so its weight initializers carry shapes and dtypes
but no data. Here they are
  1. named after the checkpoint tensor they come from (model.layers.0.mlp.up_proj.weight, ...),
  2. given the layout the graph reads: the exporter writes Linear as MatMul(x, Transpose(W)); a
     Transpose whose only input is a weight is dropped and the weight is written transposed
     (what constant folding did when weights were real, without holding two copies),
  3. hidden from the optimizer (no value, so it neither folds nor deduplicates them),
  4. streamed from the weight source into the data file: read, convert dtype, permute, write, drop.
Initializers with real values (RoPE's inv_freq, folded constants) are written as they are.
"""

from __future__ import annotations

import errno
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ltexport.errors import LtexportError

ALIGN = 4096  # page-aligned tensors let runtimes memory-map them
INLINE_LIMIT = 1024  # smaller real-valued initializers stay inside model.onnx
SOURCE_KEY = "ltexport.source"  # TensorProto metadata: checkpoint name ...
TRANSPOSE_KEY = "ltexport.transpose"  # ... and the permutation applied to it, if any


@dataclass
class Weight:
    source: str  # checkpoint tensor name
    shape: tuple[int, ...]  # as stored in the checkpoint
    dtype: torch.dtype  # as the graph reads it
    perm: tuple[int, ...] | None = None


def _is_fake(value) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(getattr(value.const_value, "raw", None), FakeTensor)


def take_placeholders(model, source_names: dict[str, list[str]], available: set[str], prefix: str) -> dict:
    """Find the fake weight initializers, name them after the checkpoint and drop their values.

    source_names: hybrid parameter name -> checkpoint names; `prefix` is the export wrapper's.
    Returns {ir.Value: Weight}.
    """
    from ltexport.models.skeleton import pick_name

    graph = model.graph
    weights = {}
    for value in list(graph.initializers.values()):
        if not _is_fake(value):
            continue
        raw = value.const_value.raw
        names = source_names.get(value.name.removeprefix(prefix))
        if names is None:
            raise RuntimeError(f"traced initializer {value.name} is not a parameter of the hybrid model")
        source = pick_name(names, available, "the weight source")
        weights[value] = Weight(source, tuple(raw.shape), raw.dtype)
        value.const_value = None
        value.name = source
    for value, weight in weights.items():
        _fold_transpose(graph, value, weight)
    return weights


def _fold_transpose(graph, value, weight: Weight) -> None:
    import onnx_ir as ir

    uses = list(value.uses())
    if len(uses) != 1 or uses[0].node.op_type != "Transpose" or uses[0].node.domain not in ("", "ai.onnx"):
        return
    node = uses[0].node
    out = node.outputs[0]
    if out.is_graph_output():
        return
    perm = tuple(node.attributes["perm"].value)
    ir.convenience.replace_all_uses_with(out, value)
    graph.remove(node, safe=True)
    weight.perm = perm
    value.shape = ir.Shape([weight.shape[p] for p in perm])


@contextmanager
def quiet_optimizer():
    """The initializer deduplication pass warns once per valueless weight: expected here."""
    logger = logging.getLogger("onnx_ir.passes.common.initializer_deduplication")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_data(model, weights: dict, source, data_path: Path) -> None:
    """Stream every weight (and every large real-valued initializer) into `data_path`."""
    from ltexport.progress import progress

    initializers = list(model.graph.initializers.values())
    try:
        with open(data_path, "wb") as f, progress(len(initializers), "writing weights") as bar:
            for value in initializers:
                if value in weights:
                    _write_weight(f, value, weights[value], source, data_path)
                elif value.const_value is not None and value.const_value.nbytes >= INLINE_LIMIT:
                    _write_tensor(f, value, _bytes_of(value.const_value), data_path, {})
                bar.update()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LtexportError(f"the disk holding {data_path.parent} filled up while writing weights; free space and rebuild") from None
        raise


def _write_weight(f, value, weight: Weight, source, data_path: Path) -> None:
    from ltexport.models.skeleton import check_shape

    tensor = check_shape(source.get(weight.source), weight.shape, weight.source)
    if weight.perm:
        tensor = tensor.permute(weight.perm)
    # One copy that converts the dtype and lays out the permutation: peak = source + result.
    data = torch.empty(tensor.shape, dtype=weight.dtype).copy_(tensor)
    del tensor
    meta = {SOURCE_KEY: weight.source}
    if weight.perm:
        meta[TRANSPOSE_KEY] = ",".join(map(str, weight.perm))
    _write_tensor(f, value, _bytes_of_torch(data), data_path, meta)


def _write_tensor(f, value, data, data_path: Path, meta: dict) -> None:
    import onnx_ir as ir

    offset = -f.tell() % ALIGN + f.tell()
    f.seek(offset)
    f.write(data)
    value.const_value = ir.ExternalTensor(
        data_path.name, offset, len(data), value.dtype, shape=value.shape, name=value.name,
        metadata_props=meta, base_dir=data_path.parent,
    )


def _bytes_of_torch(tensor: torch.Tensor):
    # Raw little-endian bytes of any dtype (numpy has no bfloat16): a uint8 view, no copy.
    return tensor.reshape(-1).view(torch.uint8).numpy()


def _bytes_of(tensor) -> bytes:
    return tensor.tobytes()
