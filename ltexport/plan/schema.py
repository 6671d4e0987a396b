"""plan.json (format "ltexport-plan", version 1): which layers are lazy, with the evidence.

Loading checks everything that can be checked without the model; `check_against(spec)` checks the
plan against a model's config before any weight is loaded.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltexport.errors import LtexportError
from ltexport.models.spec import ModelSpec
from ltexport.staging import write_text_atomic

FORMAT = "ltexport-plan"
VERSION = 1
PREFILL_MODES = ("dense", "streaming")


@dataclass
class Plan:
    model: dict
    sink: int
    window: int
    lazy_layers: list[int]
    prefill: str = "dense"
    scores: list[float] | None = None
    calibration: dict | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        check_window(self.sink, self.window)
        if self.prefill not in PREFILL_MODES:
            raise LtexportError(f"prefill must be one of {', '.join(PREFILL_MODES)}, got {self.prefill!r}")
        self.lazy_layers = check_layers(self.lazy_layers, self.model["num_layers"])
        if self.scores is not None and len(self.scores) != self.model["num_layers"]:
            raise LtexportError(
                f"plan has {len(self.scores)} scores for {self.model['num_layers']} layers; regenerate it with `ltexport plan`"
            )

    @property
    def num_layers(self) -> int:
        return self.model["num_layers"]

    def is_lazy(self, layer: int) -> bool:
        return layer in self.lazy_layers

    def to_json(self) -> dict:
        doc = {"format": FORMAT, "version": VERSION, **asdict(self)}
        if not doc["metadata"]:
            doc.pop("metadata")
        return doc

    def check_against(self, spec: ModelSpec) -> None:
        expected = spec.plan_header()
        for key, value in expected.items():
            if self.model.get(key) != value:
                raise LtexportError(
                    f"plan was made for a model with {key}={self.model.get(key)}, but this model has {key}={value}; "
                    "run `ltexport plan` for this model"
                )
        check_window(self.sink, self.window, spec.max_positions)


def check_window(sink, window, max_positions: int = 0) -> None:
    """max_positions: the model's (0: unknown); sink + window beyond it would size caches for
    positions the model never reaches (a 1e9 window asks for hundreds of GB)."""
    if not isinstance(sink, int) or isinstance(sink, bool) or sink < 0:
        raise LtexportError(f"sink must be an integer >= 0, got {sink!r}; e.g. --sink 4")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise LtexportError(f"window must be an integer >= 1, got {window!r}; e.g. --window 1020")
    if max_positions and sink + window > max_positions:
        raise LtexportError(f"sink {sink} + window {window} exceeds the model's {max_positions} positions; "
                            f"use a window of at most {max(1, max_positions - sink)}")


def check_layers(layers, num_layers: int) -> list[int]:
    if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise LtexportError(f"lazy layers must be a list of integers, got {layers!r}")
    repeated = sorted({i for i in layers if layers.count(i) > 1})
    if repeated:
        raise LtexportError(f"layer {repeated[0]} is listed twice; list each lazy layer once")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise LtexportError(f"layer {bad[0]} is out of range: the model has layers 0..{num_layers - 1}")
    return sorted(layers)


def check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= 1):
        raise LtexportError(f"lazy fraction must be in (0, 1], got {fraction!r}; e.g. --lazy-fraction 0.25")


def load_plan(path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise LtexportError(f"plan file {path} does not exist; create one with `ltexport plan`")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LtexportError(f"{path} is not valid JSON ({exc}); create a plan with `ltexport plan`") from None
    return plan_from_json(doc, str(path))


def plan_from_json(doc, where: str = "plan") -> Plan:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LtexportError(f"{where} is not an ltexport plan (format must be {FORMAT!r}); create one with `ltexport plan`")
    version = doc.get("version")
    if version != VERSION:
        raise LtexportError(f"{where} has plan version {version!r}; this ltexport reads version {VERSION}: upgrade ltexport or re-run `ltexport plan`")
    missing = [k for k in ("model", "sink", "window", "lazy_layers") if k not in doc]
    if missing:
        raise LtexportError(f"{where} lacks {', '.join(missing)}; re-run `ltexport plan`")
    model = doc["model"]
    if not isinstance(model, dict) or not isinstance(model.get("num_layers"), int):
        raise LtexportError(f"{where} has no valid model.num_layers; re-run `ltexport plan`")
    known = {"model", "sink", "window", "lazy_layers", "prefill", "scores", "calibration", "metadata"}
    return Plan(**{k: v for k, v in doc.items() if k in known})


def plan_text(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=1) + "\n"


def save_plan(plan: Plan, path) -> None:
    write_text_atomic(Path(path), plan_text(plan))


def is_plan_file(path) -> bool:
    """Whether `path` holds an ltexport plan (so `plan -o` may overwrite it)."""
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT
