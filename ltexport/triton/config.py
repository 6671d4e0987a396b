"""The Triton model configuration (config.pbtxt) for one build, written as protobuf text.

Two flavours (docs/triton.md): `model_config_text` for Triton's onnxruntime / TensorRT backend with
the caches as implicit state, `python_model_config_text` for the python backend running ltexport.

Choices for the implicit-state flavour:
- max_batch_size: 0. Triton gives every tensor, states included, its full shape with batch 1.
  The graph keeps one past_len per row but a single past_seq dim for all rows of a full layer, so
  sequences at different context lengths (or prompt lengths) cannot share a batch anyway.
  Concurrency comes from instances: each instance serves one sequence at a time.
- Every cache is an implicit state; past_len is a state paired with present_len; the client sends
  only input_ids. Fixed-shape states start from zeros of their exact shape. Growing states
  (full layers) use dims [1, kv_heads, -1, head_dim] and start as one zero row, which is what
  Triton hands the first request whatever initial_state says; the model drops it on seq_start.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltexport.errors import LtexportError
from ltexport.triton.build_io import SEQUENCE_START, BuildIO, Tensor, triton_dtype

_CONTROL_FIELDS = {6: "int32_false_true", 1: "fp32_false_true", 9: "bool_false_true"}
# python runtime: which step the model runs (auto | ort | trt, as `ltexport generate --backend`)
BACKEND_PARAMETER = "ltexport_backend"


@dataclass(frozen=True)
class ServeOptions:
    """What the config says beyond the graph: instance kind/count and sequence idle timeout."""

    gpu: bool = False
    instances: int = 1
    max_sequence_idle_us: int = 10_000_000
    max_sequences: int = 4  # python runtime: sequences each instance holds at once

    def check(self) -> None:
        for flag, value in (("--instances", self.instances), ("--max-sequence-idle-us", self.max_sequence_idle_us),
                            ("--max-sequences", self.max_sequences)):
            if value < 1:
                raise LtexportError(f"{flag} must be >= 1, got {value}")


def instance_kind(io: BuildIO, gpu: bool) -> str:
    """KIND_GPU for TensorRT builds and with --gpu, else KIND_CPU."""
    return "KIND_GPU" if (gpu or io.backend == "trt") else "KIND_CPU"


def _q(text: str) -> str:
    if any(c in text for c in '"\\\n') or not text.isprintable() or not text.isascii():
        raise LtexportError(f"tensor or model name {text!r} cannot be written to config.pbtxt; rename it")
    return f'"{text}"'


def _dims(t: Tensor) -> list[int]:
    """Config dims for max_batch_size 0: batch fixed to 1, symbolic dims -1."""
    if not t.dims:
        raise LtexportError(f"'{t.name}' has no shape in the graph; rebuild the model")
    batch = t.dims[0]
    if isinstance(batch, int) and batch != 1:
        raise LtexportError(f"'{t.name}' has a fixed batch of {batch}; Triton serving needs batch 1 or a dynamic batch")
    return [1] + [d if isinstance(d, int) else -1 for d in t.dims[1:]]


def _fmt_dims(dims) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _state(input_name, output_name, dtype, dims, init_dims, init_name) -> str:
    return (
        "    {\n"
        f"      input_name: {_q(input_name)}\n"
        f"      output_name: {_q(output_name)}\n"
        f"      data_type: {dtype}\n"
        f"      dims: {_fmt_dims(dims)}\n"
        "      initial_state: {\n"
        f"        data_type: {dtype}\n"
        f"        dims: {_fmt_dims(init_dims)}\n"
        "        zero_data: true\n"
        f"        name: {_q(init_name)}\n"
        "      }\n"
        "    }"
    )


def state_entries(io: BuildIO) -> list[dict]:
    """The implicit states as dicts (input_name, output_name, data_type, dims, initial_dims)."""
    entries = [{
        "input_name": io.past_len.name,
        "output_name": io.present_len.name,
        "data_type": triton_dtype(io.past_len.elem_type),
        "dims": [1],
        "initial_dims": [1],
    }]
    for c in io.caches:
        seq = -1 if c.growing else c.slots
        entries.append({
            "input_name": c.input_name,
            "output_name": c.output_name,
            "data_type": triton_dtype(c.elem_type),
            "dims": [1, c.kv_heads, seq, c.head_dim],
            # Triton starts a -1 dim at 1 row; say so rather than pretend it could be 0.
            "initial_dims": [1, c.kv_heads, 1 if c.growing else c.slots, c.head_dim],
        })
    return entries


def model_config_text(io: BuildIO, name: str, opts: ServeOptions, seq_start: Tensor | None) -> str:
    """config.pbtxt for `io` served as model `name`. seq_start: the graph's control input, if any."""
    if io.is_engine:
        head = f"platform: {_q('tensorrt_plan')}\ndefault_model_filename: {_q('model.plan')}\n"
    else:
        head = f"backend: {_q('onnxruntime')}\ndefault_model_filename: {_q('model.onnx')}\n"
    kind = instance_kind(io, opts.gpu)
    opts.check()

    controls = ""
    if seq_start is not None:
        field = _CONTROL_FIELDS.get(seq_start.elem_type)
        if field is None or seq_start.dims != (1,):
            raise LtexportError(
                f"the graph's '{SEQUENCE_START}' input must be int32, float or bool of shape [1]; rebuild the model"
            )
        controls = (
            "  control_input [\n"
            "    {\n"
            f"      name: {_q(seq_start.name)}\n"
            f"      control [ {{ kind: CONTROL_SEQUENCE_START {field}: [ 0, 1 ] }} ]\n"
            "    }\n"
            "  ]\n"
        )

    states = ",\n".join(
        _state(e["input_name"], e["output_name"], e["data_type"], e["dims"], e["initial_dims"],
               f"zeros:{e['input_name']}")
        for e in state_entries(io)
    )
    return (
        f"# Generated by `ltexport package`; see README.md beside this file.\n"
        f"name: {_q(name)}\n"
        f"{head}"
        "max_batch_size: 0\n"
        "input [\n"
        f"  {{ name: {_q(io.input_ids.name)} data_type: {triton_dtype(io.input_ids.elem_type)} "
        f"dims: {_fmt_dims(_dims(io.input_ids))} }}\n"
        "]\n"
        "output [\n"
        f"  {{ name: {_q(io.logits.name)} data_type: {triton_dtype(io.logits.elem_type)} "
        f"dims: {_fmt_dims(_dims(io.logits))} }}\n"
        "]\n"
        "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {int(opts.max_sequence_idle_us)}\n"
        "  direct { }\n"
        f"{controls}"
        "  state [\n"
        f"{states}\n"
        "  ]\n"
        "}\n"
        "instance_group [\n"
        f"  {{ count: {int(opts.instances)} kind: {kind} }}\n"
        "]\n"
    )


def python_model_config_text(io: BuildIO, name: str, opts: ServeOptions) -> str:
    """config.pbtxt for the python backend running ltexport's step code (ltexport.triton.python_model).

    The instance keeps each sequence's caches itself, so there is no implicit state: the `oldest`
    sequence batcher lets one instance hold up to max_sequences sequences at once (each stays on the
    instance that saw its START) and hands the model START / END / CORRID with every request.
    max_batch_size 1: each request is one sequence's [1, T] input_ids (Triton refuses a larger batch).
    """
    opts.check()
    kind = instance_kind(io, opts.gpu)
    logits_dims = _dims(io.logits)[1:]  # without the batch dim, which Triton adds for max_batch_size > 0
    return (
        "# Generated by `ltexport package --runtime python`; see README.md beside this file.\n"
        f"name: {_q(name)}\n"
        f"backend: {_q('python')}\n"
        "max_batch_size: 1\n"
        "input [\n"
        f"  {{ name: {_q(io.input_ids.name)} data_type: {triton_dtype(io.input_ids.elem_type)} dims: [ -1 ] }}\n"
        "]\n"
        "output [\n"
        f"  {{ name: {_q(io.logits.name)} data_type: {triton_dtype(io.logits.elem_type)} "
        f"dims: {_fmt_dims(logits_dims)} }}\n"
        "]\n"
        "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {int(opts.max_sequence_idle_us)}\n"
        f"  oldest {{ max_candidate_sequences: {int(opts.max_sequences)} max_queue_delay_microseconds: 0 }}\n"
        "  control_input [\n"
        '    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },\n'
        '    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },\n'
        '    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }\n'
        "  ]\n"
        "}\n"
        "instance_group [\n"
        f"  {{ count: {int(opts.instances)} kind: {kind} }}\n"
        "]\n"
        f"parameters {{ key: {_q(BACKEND_PARAMETER)} value: {{ string_value: \"auto\" }} }}\n"
    )
