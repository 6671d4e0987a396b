"""TensorRT optimization-profile shapes for the exported graph, read from its ONNX inputs (pure Python).

Two profiles: "prefill" (seq 1..max_prompt) and "decode" (seq 1). In both, batch is 1..max_batch and the
full-layer caches' past_seq axis is 0..max_context. A dim_value is fixed; a dim_param is dynamic and gets its
range from its role (input name and axis). A lazy cache dim that is symbolic is pinned to sink + window, read
from the SinkWindowAttention node that consumes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ltexport.errors import LtexportError
from ltexport.export.contract import INPUT_IDS, PAST_LEN, SEQ_START, is_cache_input

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (min, opt, max)
# Inputs TensorRT makes shape tensors need value ranges too. `seq_start` (Triton's sequence start, see
# ltexport/export/sequence_start.py) sets a Slice start: 0 = continue the sequence (the usual call), 1 = start one.
SHAPE_INPUT_VALUES: dict[str, ShapeRange] = {SEQ_START: ((0,), (0,), (1,))}


@dataclass(frozen=True)
class Profiles:
    """Ranges the engine must serve. opt_* default to the max (TensorRT tunes kernels at opt)."""

    max_batch: int = 1
    max_prompt: int = 2048
    max_context: int = 4096
    opt_batch: int | None = None
    opt_prompt: int | None = None
    opt_context: int | None = None

    def __post_init__(self):
        for name, low in (("max_batch", 1), ("max_prompt", 1), ("max_context", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LtexportError(f"profile {name} must be an int >= {low}, got {value!r}")
        for name, low, high in (("opt_batch", 1, self.max_batch), ("opt_prompt", 1, self.max_prompt),
                                ("opt_context", 0, self.max_context)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
                raise LtexportError(f"profile {name} must be an int in {low}..{high}, got {value!r}")

    @classmethod
    def for_validation(cls, sink: int, window: int, max_batch: int = 1) -> "Profiles":
        """Large enough for `ltexport build`'s validation (prompt of S+W+64 tokens, then decode steps)."""
        max_prompt = max(2048, sink + window + 64)
        return cls(max_batch=max_batch, max_prompt=max_prompt, max_context=max(4096, max_prompt + 1024))

    @property
    def batch(self) -> tuple[int, int, int]:
        return 1, self.opt_batch or self.max_batch, self.max_batch

    def seq(self, decode: bool) -> tuple[int, int, int]:
        return (1, 1, 1) if decode else (1, self.opt_prompt or self.max_prompt, self.max_prompt)

    def past_seq(self, decode: bool) -> tuple[int, int, int]:
        # A prompt usually starts from an empty cache; decode runs against a filled one.
        opt = self.opt_context if self.opt_context is not None else (self.max_context if decode else 0)
        return 0, opt, self.max_context


@dataclass(frozen=True)
class ProfileShapes:
    name: str  # "prefill" or "decode"
    shapes: dict[str, ShapeRange]  # graph input name -> (min, opt, max), in graph-input order


def _load(model):
    if isinstance(model, (str, os.PathLike)):
        import onnx

        return onnx.load(str(model), load_external_data=False)
    return model


def _role(name: str, axis: int) -> str | None:
    if name == INPUT_IDS:
        return {0: "batch", 1: "seq"}.get(axis)
    if name == PAST_LEN:
        return {0: "batch"}.get(axis)
    if is_cache_input(name):
        return {0: "batch", 2: "past_seq"}.get(axis)
    return None


def compute_profiles(model, profiles: Profiles) -> list[ProfileShapes]:
    """Profile shapes for every graph input of `model` (a ModelProto or a path; weights are not loaded)."""
    from ltexport.backends.trt.graph import lazy_cache_lengths

    model = _load(model)
    initializers = {t.name for t in model.graph.initializer}
    lazy = lazy_cache_lengths(model)
    roles_by_param: dict[str, str] = {}
    out = []
    for decode in (False, True):
        ranges = {"batch": profiles.batch, "seq": profiles.seq(decode), "past_seq": profiles.past_seq(decode)}
        shapes: dict[str, ShapeRange] = {}
        for value_info in model.graph.input:
            name = value_info.name
            if name in initializers:
                continue
            dims = value_info.type.tensor_type.shape.dim
            lo, opt, hi = [], [], []
            for axis, dim in enumerate(dims):
                if dim.HasField("dim_value"):
                    fixed = (dim.dim_value,) * 3
                elif name in lazy and axis == 2:
                    fixed = (lazy[name],) * 3  # symbolic ring length: pinned to sink + window
                elif dim.HasField("dim_param"):
                    role = _role(name, axis)
                    if role is None:
                        raise LtexportError(
                            f"input {name} axis {axis} is dynamic ({dim.dim_param!r}) but has no known range; "
                            "export it with a fixed size"
                        )
                    if roles_by_param.setdefault(dim.dim_param, role) != role:
                        raise LtexportError(
                            f"dim {dim.dim_param!r} is used as both {roles_by_param[dim.dim_param]} and {role}; "
                            "give the full-layer cache length its own dim name"
                        )
                    fixed = ranges[role]
                else:
                    raise LtexportError(f"input {name} axis {axis} has no size or name; re-export the model")
                lo.append(fixed[0])
                opt.append(fixed[1])
                hi.append(fixed[2])
            shapes[name] = (tuple(lo), tuple(opt), tuple(hi))
        out.append(ProfileShapes("decode" if decode else "prefill", shapes))
    return out
