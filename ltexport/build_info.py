"""build.json, the one schema of a build directory: read by runtime, validate, evaluate and triton.

{"format": "ltexport-build", "version": 1, "model", "source", "backend", "dtype", "trust_remote_code",
 "tokenizer", "validation_layers", "max_positions", ["engine"], "files": {relative path: size}}

`files` is the inventory of everything else the build wrote; it is what lets a later build replace
this directory (ltexport.outputs) and what `load_build` checks before anything is said about the
build. A build.json without format/version (an older ltexport) is still read where its files check
out, but it is no proof of ownership: such a directory is never replaced.
"""

import json
from pathlib import Path, PurePosixPath

from ltexport.errors import LtexportError
from ltexport.export.contract import ENGINE_FILE, MODEL_FILE
from ltexport.outputs import INVENTORY, Marker, read_inventory
from ltexport.staging import write_text_atomic
from ltexport.validate.scope import VALIDATION_DIR

BUILD_JSON = "build.json"
FORMAT = "ltexport-build"
VERSION = 1
MARKER = Marker(BUILD_JSON, FORMAT, "an ltexport build", VERSION)
BACKENDS = ("ort", "trt", "trt-rtx")
DTYPES = ("fp32", "fp16", "bf16")
TOKENIZERS = ("byte", "tokenizer", "none")
_REBUILD = "rebuild it with `ltexport build`"


def new_build_info(**fields) -> dict:
    return {"format": FORMAT, "version": VERSION, **fields}


def write_build_info(directory: Path, info: dict) -> None:
    write_text_atomic(Path(directory) / BUILD_JSON, json.dumps(info, indent=1) + "\n")


def read_build_info(out) -> dict:
    """build.json of OUT, checked field by field; one error line for anything else."""
    out = Path(out)
    path = out / BUILD_JSON
    if not out.is_dir():
        raise LtexportError(f"{out} is not an ltexport build directory (it does not exist); create one with `ltexport build -o {out}`")
    if not path.is_file():
        raise LtexportError(f"{out} is not an ltexport build directory (no {BUILD_JSON}); create one with `ltexport build`")
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise LtexportError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise LtexportError(f"{path} is not valid JSON ({exc.__class__.__name__}); {_REBUILD}") from None
    _check_fields(info, path)
    return info


def _check_fields(info, path: Path) -> None:
    if not isinstance(info, dict):
        raise LtexportError(f"{path} is not a JSON object; {_REBUILD}")
    if "format" in info or "version" in info:
        if info.get("format") != FORMAT:
            raise LtexportError(f"{path} is not an ltexport build record (format {info.get('format')!r}); {_REBUILD}")
        if info.get("version") != VERSION:
            raise LtexportError(f"{path} has build format version {info.get('version')!r}; this ltexport reads "
                                f"version {VERSION}: upgrade ltexport or rebuild")
        if read_inventory(info) is None:
            raise LtexportError(f"{path} has no valid inventory of the build's files; {_REBUILD}")
    expected = {"model": (str,), "backend": BACKENDS, "dtype": DTYPES}
    for key, allowed in expected.items():
        value = info.get(key)
        if not (isinstance(value, str) and (allowed == (str,) or value in allowed)):
            raise LtexportError(f"{path} has no valid {key!r} (got {value!r}); {_REBUILD}")
    if info.get("tokenizer") not in (*TOKENIZERS, None):
        raise LtexportError(f"{path} has an unknown tokenizer kind {info.get('tokenizer')!r}; {_REBUILD}")
    for key in ("validation_layers", "max_positions"):
        value = info.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise LtexportError(f"{path} has an invalid {key!r} ({value!r}); {_REBUILD}")


def load_build(out) -> dict:
    """build.json, after checking the build is complete: what package, generate, validate, inspect and
    eval rely on before they say anything about it."""
    out = Path(out)
    info = read_build_info(out)
    check_complete(out, info)
    return info


def check_complete(out: Path, info: dict) -> None:
    """The inventoried files at their recorded sizes, model.onnx readable, every external weight inside
    its data file (a truncated model.onnx.data is caught without reading it), the engine for TensorRT."""
    for rel, size in (read_inventory(info) or {}).items():
        path = out / rel
        if not path.is_file():
            raise LtexportError(f"{path} is missing: the build is incomplete; {_REBUILD}")
        if path.stat().st_size != size:
            raise LtexportError(f"{path} is {path.stat().st_size} bytes but the build wrote {size}: it is "
                                f"truncated or was changed; {_REBUILD}")
    graphs = [out / MODEL_FILE] + ([out / VALIDATION_DIR / MODEL_FILE] if info.get("validation_layers") else [])
    for graph in graphs:
        check_external_data(load_model_proto(graph), graph.parent, graph)
    if info["backend"] == "trt" and not (out / ENGINE_FILE).is_file():
        raise LtexportError(f"{out} is a TensorRT build without {ENGINE_FILE}; {_REBUILD} --backend trt")


def record_files(out: Path, paths) -> None:
    """Update the inventory for files rewritten in place (`ltexport validate`); older builds keep theirs."""
    info = read_build_info(out)
    files = read_inventory(info)
    if "format" not in info or files is None:
        return
    for path in filter(Path.is_file, map(Path, paths)):
        files[Path(path).relative_to(out).as_posix()] = Path(path).stat().st_size
    info[INVENTORY] = dict(sorted(files.items()))
    write_build_info(out, info)


def load_model_proto(path: Path):
    """The ONNX model without its external data (cheap even for multi-GB weights)."""
    import onnx

    if not Path(path).is_file():
        raise LtexportError(f"{path} is missing; {_REBUILD}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...: the file is damaged
        raise LtexportError(f"cannot read {path} as ONNX ({exc.__class__.__name__}); {_REBUILD}") from None


def all_tensors(model):
    """Every TensorProto of the model: initializers, constant attributes, subgraphs and functions."""
    def from_graph(graph):
        yield from graph.initializer
        yield from from_nodes(graph.node)

    def from_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from from_graph(attr.g)
                for g in attr.graphs:
                    yield from from_graph(g)

    yield from from_graph(model.graph)
    for fn in model.functions:
        yield from from_nodes(fn.node)


def external_data_files(model, directory: Path) -> list[str]:
    """Relative paths of the external data files the model references (checked to lie in directory)."""
    return sorted({rel for rel, _, _ in _external_entries(model, directory)})


def check_external_data(model, directory: Path, shown: Path) -> None:
    """Every external tensor's bytes [offset, offset + length) lie inside its data file."""
    sizes = {}
    for rel, end, tensor in _external_entries(model, directory):
        size = sizes.setdefault(rel, (directory / rel).stat().st_size)
        if end > size:
            raise LtexportError(f"{directory / rel} is {size} bytes but {shown.name}'s tensor {tensor} needs "
                                f"{end}: the weights are truncated; {_REBUILD}")


def _external_entries(model, directory: Path):
    """(relative data file, end offset, tensor name) of each external tensor."""
    from onnx import TensorProto

    for t in all_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        entry = {e.key: e.value for e in t.external_data}
        loc = entry.get("location")
        p = PurePosixPath(loc or "")
        if not loc or p.is_absolute() or ".." in p.parts or "\\" in loc:
            raise LtexportError(f"{directory}/{MODEL_FILE} references external data {loc!r} outside its directory; {_REBUILD}")
        if not (directory / p).is_file():
            raise LtexportError(f"{directory / p} (external data of {MODEL_FILE}) is missing; {_REBUILD}")
        try:
            offset, length = int(entry.get("offset", 0)), entry.get("length")
            length = int(length) if length is not None else _nbytes(t)
        except ValueError:
            raise LtexportError(f"{directory}/{MODEL_FILE}: tensor {t.name} has an invalid external data entry; {_REBUILD}") from None
        yield str(p), offset + (length or 0), t.name


def _nbytes(tensor) -> int | None:
    """Bytes of a tensor of a fixed-size element type (None for others: only its offset is checked)."""
    import math

    from onnx import TensorProto, helper

    sized = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.BOOL,
             TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
             TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)
    if tensor.data_type not in sized:
        return None
    return math.prod(tensor.dims) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
