"""Read what a build directory (`ltexport build -o OUT`) offers for serving.

Names, dtypes and shapes come from the ONNX graph itself (loaded without its external data);
plan.json only cross-checks which layers are lazy and supplies kv_heads/head_dim where the graph
leaves them symbolic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ltexport.build_info import load_model_proto
from ltexport.errors import LtexportError
from ltexport.export.contract import INPUT_IDS, LOGITS, PAST_LEN, PAST_RE as _PAST_RE, PRESENT_LEN, PRESENT_RE as _PRESENT_RE
from ltexport.export.contract import SEQ_START as SEQUENCE_START
from ltexport.plan.schema import load_plan

ENGINE_BACKENDS = ("trt", "trt-rtx")

# ONNX TensorProto element type -> (Triton data type, bytes per element)
_ONNX_TYPES = {
    1: ("TYPE_FP32", 4),
    2: ("TYPE_UINT8", 1),
    3: ("TYPE_INT8", 1),
    4: ("TYPE_UINT16", 2),
    5: ("TYPE_INT16", 2),
    6: ("TYPE_INT32", 4),
    7: ("TYPE_INT64", 8),
    9: ("TYPE_BOOL", 1),
    10: ("TYPE_FP16", 2),
    11: ("TYPE_FP64", 8),
    12: ("TYPE_UINT32", 4),
    13: ("TYPE_UINT64", 8),
    16: ("TYPE_BF16", 2),
}

def triton_dtype(elem_type: int) -> str:
    try:
        return _ONNX_TYPES[elem_type][0]
    except KeyError:
        raise LtexportError(
            f"ONNX element type {elem_type} has no Triton data type; export the model in fp32, fp16 or bf16"
        ) from None


def bytes_per_element(elem_type: int) -> int:
    try:
        return _ONNX_TYPES[elem_type][1]
    except KeyError:
        raise LtexportError(
            f"ONNX element type {elem_type} has no known element size; export the model in fp32, fp16 or bf16"
        ) from None


@dataclass(frozen=True)
class Tensor:
    """One graph input or output: name, ONNX element type, dims (int, symbolic name, or None)."""

    name: str
    elem_type: int
    dims: tuple

    @property
    def rank(self) -> int:
        return len(self.dims)


@dataclass(frozen=True)
class CacheState:
    """One KV-cache tensor carried between requests (one Triton implicit state).

    slots: the fixed number of cache rows (S+W) for a lazy layer, None for a full layer whose
    cache grows by one row per token.
    """

    layer: int
    kind: str  # "key" | "value"
    input_name: str
    output_name: str
    elem_type: int
    kv_heads: int
    head_dim: int
    slots: int | None

    @property
    def growing(self) -> bool:
        return self.slots is None


@dataclass(frozen=True)
class BuildIO:
    """Everything the packager needs to know about one build directory."""

    build_dir: Path
    backend: str  # "ort" | "trt" | "trt-rtx"
    dtype: str
    sink: int
    window: int
    lazy_layers: tuple
    num_layers: int
    input_ids: Tensor
    past_len: Tensor
    present_len: Tensor
    logits: Tensor
    seq_start: Tensor | None  # present when the graph (or the engine built from it) has the Triton control input
    caches: tuple  # CacheState, ordered by layer then key/value
    opset: int
    engine: dict | None = None  # build.json's record of a TensorRT engine (bindings, builder, ...), if any

    @property
    def has_growing_caches(self) -> bool:
        return any(c.growing for c in self.caches)

    @property
    def is_engine(self) -> bool:
        """A TensorRT (or TensorRT-RTX) engine build: Triton's tensorrt_plan platform serves model.plan."""
        return self.backend in ENGINE_BACKENDS


def _dims(value_info) -> tuple:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def graph_tensors(graph) -> tuple[dict, dict]:
    """(inputs, outputs) of an ONNX graph as {name: Tensor}; initializers are not inputs."""
    inits = {i.name for i in graph.initializer}
    ins = {
        vi.name: Tensor(vi.name, vi.type.tensor_type.elem_type, _dims(vi))
        for vi in graph.input
        if vi.name not in inits
    }
    outs = {vi.name: Tensor(vi.name, vi.type.tensor_type.elem_type, _dims(vi)) for vi in graph.output}
    return ins, outs


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise LtexportError(f"{path} is missing; package a complete `ltexport build -o OUT` directory")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LtexportError(f"{path} is not valid JSON ({exc.__class__.__name__}); rebuild the {what}") from None
    if not isinstance(data, dict):
        raise LtexportError(f"{path} is not a JSON object; rebuild the {what}")
    return data


def _concrete(dim, name: str, axis: str, fallback, path: Path) -> int:
    """A dim the config must fix: from the graph, else from plan.json; both must agree."""
    if isinstance(dim, int):
        if fallback is not None and int(fallback) != dim:
            raise LtexportError(
                f"{path}: {name} has {axis}={dim} but plan.json says {fallback}; the build is inconsistent, rebuild it"
            )
        return dim
    if isinstance(fallback, int) and fallback > 0:
        return fallback
    raise LtexportError(f"{path}: {name} has no concrete {axis} and plan.json gives none; rebuild with a valid plan")


def read_build(build_dir: Path | str) -> BuildIO:
    """Inspect OUT: report.json, plan.json and the graph I/O of OUT/model.onnx."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise LtexportError(f"build directory {build_dir} does not exist; run `ltexport build ... -o {build_dir}` first")
    report = _read_json(build_dir / "report.json", "build with `ltexport build`")
    plan = load_plan(build_dir / "plan.json")

    status = report.get("status")
    if status != "pass":
        raise LtexportError(
            f"{build_dir}/report.json has status {status!r}, not 'pass'; fix the build (see report.md) before packaging"
        )
    info = _read_json(build_dir / "build.json", "build with `ltexport build`") if (build_dir / "build.json").is_file() else {}
    # build.json says what was built (a TensorRT-RTX build's report validated the ONNX graph on ONNX Runtime).
    backend = info.get("backend", report.get("backend"))
    if backend not in ("ort", *ENGINE_BACKENDS):
        raise LtexportError(f"{build_dir} has backend {backend!r}; expected 'ort', 'trt' or 'trt-rtx', rebuild it")

    model_path = build_dir / "model.onnx"
    if not model_path.is_file():
        raise LtexportError(f"{model_path} is missing; rebuild with `ltexport build ... -o {build_dir}`")
    if backend in ENGINE_BACKENDS and not (build_dir / "model.plan").is_file():
        raise LtexportError(
            f"{build_dir} is a TensorRT build without model.plan; rebuild it with `--backend {backend}`"
        )

    sink, window, lazy, num_layers = plan.sink, plan.window, tuple(plan.lazy_layers), plan.num_layers
    pm = plan.model

    model = load_model_proto(model_path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ins, outs = graph_tensors(model.graph)

    def need(table, name, kind):
        if name not in table:
            raise LtexportError(f"{model_path} has no {kind} '{name}'; rebuild it with the current `ltexport build`")
        return table[name]

    input_ids = need(ins, INPUT_IDS, "input")
    past_len = need(ins, PAST_LEN, "input")
    present_len = need(outs, PRESENT_LEN, "output")
    logits = need(outs, LOGITS, "output")
    seq_start = ins.get(SEQUENCE_START)
    engine = _engine_record(info, backend, model, build_dir) if backend in ENGINE_BACKENDS else None
    if engine is not None and seq_start is None:
        seq_start = _engine_tensor(engine, SEQUENCE_START)
    if past_len.rank != 1 or present_len.rank != 1 or past_len.elem_type != present_len.elem_type:
        raise LtexportError(
            f"{model_path}: past_len and present_len must both be [batch] tensors of one dtype; rebuild it"
        )
    if input_ids.rank != 2 or logits.rank != 3:
        raise LtexportError(f"{model_path}: input_ids must be [batch, seq] and logits [batch, seq, vocab]; rebuild it")

    pasts, presents = {}, {}
    for name in ins:
        m = _PAST_RE.match(name)
        if m:
            pasts[(int(m.group(1)), m.group(2))] = ins[name]
        elif name not in (INPUT_IDS, PAST_LEN, SEQUENCE_START):
            raise LtexportError(
                f"{model_path} has input '{name}' that Triton cannot supply; package only graphs from `ltexport build`"
            )
    for name in outs:
        m = _PRESENT_RE.match(name)
        if m:
            presents[(int(m.group(1)), m.group(2))] = outs[name]

    expected = {(i, k) for i in range(num_layers) for k in ("key", "value")}
    if set(pasts) != expected or set(presents) != expected:
        raise LtexportError(
            f"{model_path} does not have past_key_values.{{i}}.key|value and present.{{i}}.key|value for exactly "
            f"the {num_layers} layers of plan.json; rebuild it"
        )

    caches = []
    for i in range(num_layers):
        for kind in ("key", "value"):
            p, q = pasts[(i, kind)], presents[(i, kind)]
            if p.rank != 4 or q.rank != 4:
                raise LtexportError(f"{model_path}: {p.name} and {q.name} must be 4-D [batch, kv_heads, seq, head_dim]; rebuild it")
            if p.elem_type != q.elem_type:
                raise LtexportError(f"{model_path}: {p.name} and {q.name} have different dtypes; rebuild it")
            kv = _concrete(p.dims[1], p.name, "kv_heads", pm.get("num_kv_heads"), model_path)
            hd = _concrete(p.dims[3], p.name, "head_dim", pm.get("head_dim"), model_path)
            fixed = isinstance(p.dims[2], int)
            if (i in lazy) != fixed:
                what = "lazy" if i in lazy else "full"
                raise LtexportError(
                    f"{model_path}: layer {i} is {what} in plan.json but {p.name} has seq dim {p.dims[2]!r}; "
                    "the build is inconsistent, rebuild it"
                )
            if fixed:
                if p.dims[2] != sink + window or q.dims[2] != sink + window:
                    raise LtexportError(
                        f"{model_path}: lazy cache {p.name} has {p.dims[2]} rows and {q.name} {q.dims[2]!r}, "
                        f"not sink+window={sink + window} from plan.json; rebuild it"
                    )
            elif isinstance(q.dims[2], int):
                raise LtexportError(f"{model_path}: {q.name} of full layer {i} has a fixed seq dim; rebuild it")
            caches.append(CacheState(i, kind, p.name, q.name, p.elem_type, kv, hd, p.dims[2] if fixed else None))

    return BuildIO(
        build_dir=build_dir,
        backend=backend,
        dtype=str(report.get("dtype", "")),
        sink=sink,
        window=window,
        lazy_layers=lazy,
        num_layers=num_layers,
        input_ids=input_ids,
        past_len=past_len,
        present_len=present_len,
        logits=logits,
        seq_start=seq_start,
        caches=tuple(caches),
        opset=opset,
        engine=engine,
    )


def _engine_record(info: dict, backend: str, model, build_dir: Path) -> dict | None:
    """build.json's engine record, checked against the graph: the config is written from the graph's I/O, so it
    matches the engine only if the engine's bindings are that I/O (plus the seq_start it was built with)."""
    engine = info.get("engine") or {}
    if "bindings" not in engine:
        return None  # a build from before engines were recorded: the graph alone describes it
    import onnx

    from ltexport.backends.trt.graph import with_sequence_start
    from ltexport.backends.trt.record import check_against_graph

    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    if SEQUENCE_START not in {i.name for i in graph.graph.input}:
        with_sequence_start(graph)
    check_against_graph(engine, graph, f"{build_dir}/model.onnx's inputs and outputs (+ seq_start)")
    return engine


def _engine_tensor(engine: dict, name: str) -> Tensor | None:
    from ltexport.backends.trt.record import ONNX_DTYPES

    elem = {v: k for k, v in ONNX_DTYPES.items()}
    for b in engine["bindings"]:
        if b["name"] == name:
            return Tensor(name, elem[b["dtype"]], tuple(b["shape"]))
    return None
