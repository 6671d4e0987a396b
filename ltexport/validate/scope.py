"""How much of a build is validated: the whole model, or a prefix of its layers.

A 7B model's PyTorch reference and its ONNX Runtime session do not both fit in 24 GB. A prefix
(the first N decoder layers + final norm + lm_head, cut from the same checkpoint) is exported
through the same exporter into OUT/validation/ and compared with the same Polygraphy comparison
against a reference that loads only those layers' weights. That the full model.onnx carries the
validated weights is checked byte for byte.

Automatic choice (`--validate-layers auto`): the whole model when its validation is estimated to
need at most AUTO_FRACTION of the available memory; otherwise the shortest prefix of at least
MIN_PREFIX layers that contains a lazy layer, if that fits the same budget, else MIN_PREFIX layers.
"""

from dataclasses import dataclass
from pathlib import Path

from ltexport.errors import LtexportError
from ltexport.plan.schema import Plan
from ltexport.preflight import GB

AUTO_FRACTION = 0.6  # "fits comfortably": leave room for other processes and estimate error
MIN_PREFIX = 2
VALIDATION_DIR = "validation"


@dataclass(frozen=True)
class Scope:
    layers: int | None  # None: the whole model
    reason: str

    @property
    def prefix(self) -> bool:
        return self.layers is not None


def parse_layers(text: str, num_layers: int) -> str | int:
    """`auto`, `all` or a layer count from --validate-layers."""
    if text in ("auto", "all"):
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= num_layers:
        raise LtexportError(f"--validate-layers must be auto, all or 1..{num_layers}, got {text!r}")
    return "all" if count == num_layers else count


def choose_scope(requested: str, plan: Plan, need, available: float) -> Scope:
    """need(layers or None) -> estimated peak bytes of validating that scope."""
    wanted = parse_layers(str(requested), plan.num_layers)
    if wanted == "all":
        _require(need(None), available, "full validation", "pass --validate-layers N to validate a prefix of N layers")
        return Scope(None, "requested: all layers")
    if wanted != "auto":
        _require(need(wanted), available, f"validating {wanted} layers", "pass a smaller --validate-layers")
        return Scope(wanted, f"requested: the first {wanted} layers")
    budget = AUTO_FRACTION * available
    if need(None) <= budget:
        return Scope(None, f"auto: the whole model fits ({need(None) / GB:.1f} GB of {available / GB:.1f} GB available)")
    lazy = min(plan.lazy_layers, default=None)
    count = max(MIN_PREFIX, lazy + 1) if lazy is not None else MIN_PREFIX
    if count >= plan.num_layers or need(count) > budget:
        count = MIN_PREFIX
    _require(need(count), available, f"validating {count} layers", "free memory or build on a larger machine")
    reason = f"auto: the whole model needs ~{need(None) / GB:.0f} GB, {available / GB:.1f} GB available"
    if lazy is not None and lazy >= count:
        reason += f"; no lazy layer in this prefix (the first is {lazy}): --validate-layers {lazy + 1} would include one"
    return Scope(count, reason)


def _require(need: float, available: float, what: str, fix: str) -> None:
    if need > available:
        raise LtexportError(f"{what} needs ~{need / GB:.1f} GB of memory but {available / GB:.1f} GB is available; {fix}")


def prefix_plan(plan: Plan, layers: int) -> Plan:
    """The plan restricted to the first `layers` layers (same sink/window/prefill)."""
    return Plan(model={**plan.model, "num_layers": layers}, sink=plan.sink, window=plan.window,
                lazy_layers=[i for i in plan.lazy_layers if i < layers], prefill=plan.prefill)


def mismatched_weights(prefix_model: Path, full_model: Path) -> list[str]:
    """Names of the prefix graph's checkpoint weights whose bytes differ in (or miss from) the full graph."""
    import onnx

    from ltexport.export.weight_data import SOURCE_KEY

    full = {t.name: t for t in onnx.load(str(full_model), load_external_data=False).graph.initializer}
    bad = []
    for tensor in onnx.load(str(prefix_model), load_external_data=False).graph.initializer:
        if not any(m.key == SOURCE_KEY for m in tensor.metadata_props):
            continue
        other = full.get(tensor.name)
        if other is None or not _same_bytes(tensor, prefix_model.parent, other, full_model.parent):
            bad.append(tensor.name)
    return bad


def _same_bytes(a, a_dir: Path, b, b_dir: Path, chunk: int = 64 * 2**20) -> bool:
    (fa, oa, na), (fb, ob, nb) = _location(a, a_dir), _location(b, b_dir)
    if na != nb or list(a.dims) != list(b.dims) or a.data_type != b.data_type:
        return False
    with open(fa, "rb") as x, open(fb, "rb") as y:
        x.seek(oa)
        y.seek(ob)
        for start in range(0, na, chunk):
            size = min(chunk, na - start)
            if x.read(size) != y.read(size):
                return False
    return True


def _location(tensor, base: Path) -> tuple[Path, int, int]:
    info = {e.key: e.value for e in tensor.external_data}
    return base / info["location"], int(info.get("offset", 0)), int(info["length"])
