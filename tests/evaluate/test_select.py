"""Drops and the auto-plan rule on synthetic eval results."""

import pytest

from ltexport.errors import LtexportError
from ltexport.evaluate import select


def result(correct: dict, ppl: dict) -> dict:
    """correct: context -> [bool per depth]; ppl: context -> ppl."""
    cells = [{"context": c, "correct": ok} for c, oks in correct.items() for ok in oks]
    return {"passkey": {"cells": cells}, "perplexity": {str(c): {"ppl": p} for c, p in ppl.items()}}


ORIGINAL = result({1024: [True] * 4, 2048: [True] * 4, 4096: [True, True, True, False]},
                  {1024: 5.0, 2048: 7.0, 4096: 10.0})


def test_drops_ignore_control_contexts():
    # At 1024 (= sink + window) the variant is worse, but nothing is evicted there: a control, not evidence.
    variant = result({1024: [False] * 4, 2048: [True, True, True, False], 4096: [True, True, False, False]},
                     {1024: 9.0, 2048: 7.7, 4096: 10.2})
    d = select.drops(ORIGINAL, variant, evicts_at=1024)
    assert d["passkey_points"] == pytest.approx(100 * (7 / 8 - 5 / 8))
    assert d["ppl_percent"] == pytest.approx(10.0)  # worst of +10% (2048) and +2% (4096)


def test_no_evicting_context_gives_no_evidence():
    d = select.drops(ORIGINAL, ORIGINAL, evicts_at=10_000)
    assert d["passkey_points"] is None and d["ppl_percent"] is None
    assert not select.within(d, 100)


@pytest.mark.parametrize("figures, max_drop, ok", [
    ((0.0, 0.0), 0, True),
    ((5.0, 1.0), 5, True),       # the bound is inclusive
    ((5.1, 1.0), 5, False),      # passkey over
    ((0.0, 5.1), 5, False),      # perplexity over
    ((-10.0, -1.0), 0, True),    # better than the original
])
def test_within(figures, max_drop, ok):
    assert select.within({"passkey_points": figures[0], "ppl_percent": figures[1]}, max_drop) is ok


def ev(fraction, pk_drop, ppl_drop):
    return {"lazy_fraction": fraction, "drops": {"passkey_points": pk_drop, "ppl_percent": ppl_drop}}


def test_choose_the_largest_fraction_within():
    evidence = [ev(0.5, 12.0, 3.0), ev(0.125, 0.0, 0.5), ev(0.25, 0.0, 1.0), ev(0.375, 4.0, 2.0)]
    assert select.choose_fraction(evidence, 5) == 0.375
    assert select.choose_fraction(evidence, 20) == 0.5
    assert select.choose_fraction(evidence, 0.5) == 0.125


def test_a_failure_stops_the_search_even_if_a_larger_fraction_passes():
    evidence = [ev(0.25, 0.0, 1.0), ev(0.375, 11.0, 1.0), ev(0.5, 0.0, 1.5)]  # 0.5 passing is noise
    assert select.choose_fraction(evidence, 5) == 0.25


def test_none_within():
    assert select.choose_fraction([ev(0.25, 30.0, 1.0)], 5) is None


@pytest.mark.parametrize("text", ["a,b", "", "0.5,2"])
def test_bad_fraction_lists(text):
    with pytest.raises(LtexportError):
        select.parse_fractions(text, "--candidates")
