"""`ltexport plan`: measure lazy ratios on calibration text and choose the lazy layers."""

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ltexport.errors import LtexportError
from ltexport.models.sources import ModelSource
from ltexport.plan.schema import Plan, check_fraction, check_layers, check_window


@dataclass
class PlanConfig:
    sink: int
    window: int
    prefill: str = "dense"
    lazy_fraction: float | None = None
    layers: list[int] | None = None  # explicit choice: no calibration run
    last_queries: int = 64
    calib_path: Path | None = None
    calib_tokens: int = 4096
    stream_layers: bool | None = None  # None: layer by layer only when the fp32 model does not fit in memory


def default_calibration_text() -> str:
    return resources.files("ltexport.data").joinpath("calibration.txt").read_text()


def read_calibration_text(path) -> str:
    """A --calib file as text; a binary or non-UTF-8 file is refused."""
    path = Path(path)
    if not path.is_file():
        raise LtexportError(f"calibration file {path} does not exist; pass a text file to --calib")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise LtexportError(f"cannot read calibration file {path} ({exc.strerror}); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise LtexportError(f"calibration file {path} is not UTF-8 text (byte {exc.start}); pass a UTF-8 text file to --calib") from None
    if "\0" in text:
        raise LtexportError(f"calibration file {path} is binary (it holds NUL bytes); pass a UTF-8 text file to --calib")
    return text


def check_config(config: PlanConfig, num_layers: int, max_positions: int) -> None:
    """Everything that can be wrong with the arguments, checked before any weight is loaded."""
    check_window(config.sink, config.window, max_positions)
    if config.layers is not None:
        check_layers(config.layers, num_layers)
        return
    check_fraction(config.lazy_fraction)
    if config.last_queries < 1:
        raise LtexportError(f"--last-queries must be >= 1, got {config.last_queries}")
    if config.calib_tokens <= config.last_queries:
        raise LtexportError(f"--calib-tokens ({config.calib_tokens}) must exceed --last-queries ({config.last_queries})")
    if max_positions and config.calib_tokens > max_positions:
        raise LtexportError(f"--calib-tokens {config.calib_tokens} exceeds the model's {max_positions} positions; lower it")
    if config.calib_path is not None:
        read_calibration_text(config.calib_path)


def choose_lazy_layers(scores: list[float], fraction: float) -> list[int]:
    """The round(fraction x layers) layers with the highest lazy ratio (at least one)."""
    count = max(1, math.floor(fraction * len(scores) + 0.5))
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:count])


def make_plan(source: ModelSource, config: PlanConfig, progress=print, model=None) -> Plan:
    """`model`: the already loaded original model (fp32), to avoid loading it twice."""
    spec = source.spec()
    check_config(config, spec.num_layers, spec.max_positions)
    common = dict(model=spec.plan_header(), sink=config.sink, window=config.window, prefill=config.prefill)
    if config.layers is not None:
        return Plan(lazy_layers=list(config.layers), **common)
    streamed = model is None and _stream(source, config, progress)
    text = read_calibration_text(config.calib_path) if config.calib_path else default_calibration_text()
    tokenizer, token_kind = source.text_tokenizer()
    ids = tokenizer.encode(text)
    if len(ids) < config.calib_tokens:
        raise LtexportError(
            f"calibration text has {len(ids)} tokens, fewer than --calib-tokens {config.calib_tokens}; "
            "pass a longer --calib file or lower --calib-tokens"
        )
    ids = ids[: config.calib_tokens]
    kind = "" if token_kind == "tokenizer" else f", {token_kind}"
    how = ", layer by layer" if streamed else ""
    progress(f"measuring lazy ratios of {spec.num_layers} layers on {len(ids)} calibration tokens{kind}{how} ...")
    scores = _measure(source, ids, config, model, streamed)
    calibration = {
        "method": "lazy-ratio", "tokens": len(ids), "last_queries": config.last_queries,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "source": str(config.calib_path) if config.calib_path else "ltexport/data/calibration.txt",
        "lazy_fraction": config.lazy_fraction,
    }
    if token_kind != "tokenizer":
        calibration["token_ids"] = token_kind
    return Plan(lazy_layers=choose_lazy_layers(scores, config.lazy_fraction),
                scores=[round(s, 6) for s in scores], calibration=calibration, **common)


def _stream(source: ModelSource, config: PlanConfig, notice) -> bool:
    """Whether to measure layer by layer (preflight: before any weight is loaded)."""
    from ltexport import preflight
    from ltexport.models.streaming import model_sizes

    sizes = model_sizes(source.skeleton("fp32"), source.config)
    in_memory, streamed = (preflight.plan_memory(sizes, config.calib_tokens, config.last_queries, s) for s in (False, True))
    return preflight.choose_streaming(config.stream_layers, in_memory, streamed, "measuring lazy ratios", notice)


def _measure(source: ModelSource, ids: list[int], config: PlanConfig, model=None, streamed: bool = False) -> list[float]:
    import torch

    from ltexport.plan.lazy_ratio import measure_lazy_ratios
    from ltexport.plan.streamed import stream_lazy_ratios

    options = dict(sink=config.sink, window=config.window, last_queries=config.last_queries)
    if streamed:
        return stream_lazy_ratios(source, ids, **options)
    model = model if model is not None else source.load_model("fp32")
    return measure_lazy_ratios(model, torch.tensor([ids]), **options)
