"""How much quality a hybrid loses against the original, and which lazy fraction to pick.

Drops are measured only at contexts longer than the variant's sink + window: shorter contexts are
controls (nothing is evicted there, so the hybrid must match the original) and would dilute them.
- passkey drop: 100 x (accuracy of the original - accuracy of the variant), in points, over all
  cells (context x depth) at those contexts;
- perplexity drop: 100 x (ppl_variant / ppl_original - 1), in percent, the worst over those contexts.
A variant is within `max_drop` when both drops are <= max_drop.

The chosen fraction is the largest candidate that is within `max_drop` *and every smaller candidate
is too*: lazy layer sets are nested (the highest lazy ratios first), so a larger fraction passing
after a smaller one failed is noise, not evidence. (All candidates are evaluated together: they share
each prompt's prefill, the expensive part.)
"""

from ltexport.errors import LtexportError

RULE = ("largest candidate whose passkey drop (accuracy points) and decode-perplexity drop (percent, worst "
        "context) at contexts > sink + window are both <= max_drop, with every smaller candidate within too")


def passkey_accuracy(cells: list[dict], min_context: int = 0) -> float | None:
    picked = [c["correct"] for c in cells if c["context"] > min_context]
    return sum(picked) / len(picked) if picked else None


def drops(original: dict, variant: dict, evicts_at: int) -> dict:
    """original/variant: {"passkey": {"cells": [...]}, "perplexity": {context: {"ppl"}}} -> drops."""
    acc0 = passkey_accuracy(original["passkey"]["cells"], evicts_at)
    acc = passkey_accuracy(variant["passkey"]["cells"], evicts_at)
    ppl = [100 * (variant["perplexity"][c]["ppl"] / original["perplexity"][c]["ppl"] - 1)
           for c in variant["perplexity"] if int(c) > evicts_at]
    return {
        "passkey_points": None if acc is None else round(100 * (acc0 - acc), 2),
        "ppl_percent": round(max(ppl), 3) if ppl else None,
        "over_context": evicts_at,
    }


def within(drop: dict, max_drop: float) -> bool:
    figures = [drop["passkey_points"], drop["ppl_percent"]]
    if all(f is None for f in figures):
        return False  # no context evicted anything: no evidence either way
    return all(f is None or f <= max_drop for f in figures)


def choose_fraction(evidence: list[dict], max_drop: float) -> float | None:
    """evidence: [{"lazy_fraction", "drops"}] in any order -> the chosen fraction (None: none passes)."""
    chosen = None
    for item in sorted(evidence, key=lambda e: e["lazy_fraction"]):
        if not within(item["drops"], max_drop):
            break
        chosen = item["lazy_fraction"]
    return chosen


def parse_fractions(text: str, option: str, allow_zero: bool = True) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LtexportError(f"{option} must be comma-separated numbers, got {text!r}; e.g. {option} 0,0.25,0.5") from None
    low = 0 if allow_zero else 1e-9
    bad = [v for v in values if not low <= v <= 1]
    if not values or bad:
        raise LtexportError(f"{option} values must be in [{'0' if allow_zero else '0+'}, 1], got {text!r}; e.g. {option} 0.25,0.5")
    return sorted(set(values))


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LtexportError(f"{option} must be comma-separated integers, got {text!r}; e.g. {option} 1024,2048") from None
    if not values or min(values) < 1:
        raise LtexportError(f"{option} needs positive integers, got {text!r}; e.g. {option} 1024,2048")
    return sorted(set(values))
