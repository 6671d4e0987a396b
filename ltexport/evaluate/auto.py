"""`ltexport plan --auto`: the largest lazy fraction whose measured quality drop stays within a bound.

One calibration run and one evaluation of every candidate (see select.py for the rule); the chosen
plan carries the evidence in `metadata["auto"]`, so a plan file says why it has the layers it has.
"""

from dataclasses import replace

from ltexport.errors import LtexportError
from ltexport.evaluate.run import EvalConfig, evaluate
from ltexport.evaluate.select import RULE, choose_fraction, within
from ltexport.plan.schema import Plan

DEFAULT_CANDIDATES = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def auto_plan(config: EvalConfig, max_drop: float, on_results=None) -> Plan:
    """config.lazy_fractions are the candidates; `on_results(results)` sees the evidence even when
    no candidate passes."""
    if max_drop < 0:
        raise LtexportError(f"--max-drop must be >= 0, got {max_drop}")
    results, plans = evaluate(config)
    if on_results is not None:
        on_results(results)
    return choose_plan(results, plans, max_drop)


def choose_plan(results: dict, plans: list[Plan], max_drop: float) -> Plan:
    original, variants = results["variants"][0], results["variants"][1:]
    evidence = [_evidence(v, max_drop) for v in variants]
    chosen = choose_fraction(evidence, max_drop)
    if chosen is None:
        first = min(evidence, key=lambda e: e["lazy_fraction"])
        raise LtexportError(
            f"no candidate keeps the drop within {max_drop:g}: the smallest, {first['lazy_fraction']:g}, drops "
            f"{_fmt(first['drops'])}; raise --max-drop or pass smaller --candidates")
    plan = next(p for p in plans if p.calibration["lazy_fraction"] == chosen)
    metadata = {"auto": {
        "max_drop": max_drop, "rule": RULE, "chosen_fraction": chosen,
        "original": {"passkey_accuracy": original["passkey"]["accuracy"],
                     "ppl": {c: r["ppl"] for c, r in original["perplexity"].items()}},
        "candidates": evidence, "settings": results["settings"], "model": results["model"],
    }}
    return replace(plan, metadata={**plan.metadata, **metadata})


def _evidence(v: dict, max_drop: float) -> dict:
    return {"lazy_fraction": v["requested_fraction"], "lazy_layers": v["lazy_layers"],
            "passkey_accuracy": v["passkey"]["accuracy"],
            "ppl": {c: round(r["ppl"], 4) for c, r in v["perplexity"].items()},
            "drops": v["drops"], "within": within(v["drops"], max_drop)}


def _fmt(d: dict) -> str:
    pk = "n/a" if d["passkey_points"] is None else f"{d['passkey_points']:+.1f}"
    ppl = "n/a" if d["ppl_percent"] is None else f"{d['ppl_percent']:+.2f}%"
    return f"passkey {pk} points, perplexity {ppl}"
