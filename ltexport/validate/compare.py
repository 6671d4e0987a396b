"""Validation: the compiled graph vs the PyTorch hybrid reference, through Polygraphy's Comparator.

Feeds are the reference's own greedy path (prefill, then N decode steps fed with the reference's
caches), so every step compares the backends on identical inputs. Steps run one at a time; a decode
step keeps only the cache rows it wrote (see _Tally). A separate free-running greedy loop per backend
checks token agreement.
"""

from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np

from ltexport.generation import iter_tokens
from ltexport.progress import progress
from ltexport.export.contract import (INPUT_IDS, INPUT_PREFIX, LOGITS, OUTPUT_PREFIX, PAST_LEN, PRESENT_LEN, cache_names,
                                      is_cache_output, past_name, present_name)


@dataclass
class Tolerance:
    atol: float
    rtol: float


@dataclass
class CheckStats:
    name: str
    atol: float
    rtol: float
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0  # Polygraphy's, over every element: huge where the reference is near 0
    max_rel_diff_above_atol: float = 0.0  # over elements whose reference magnitude exceeds atol
    passed: bool = True

    def add(self, result, actual: np.ndarray, expected: np.ndarray) -> None:
        self.max_abs_diff = max(self.max_abs_diff, result.max_absdiff or 0.0)
        self.max_rel_diff = max(self.max_rel_diff, result.max_reldiff or 0.0)
        self.max_rel_diff_above_atol = max(self.max_rel_diff_above_atol, significant_rel_diff(actual, expected, self.atol))
        self.passed = self.passed and bool(result)

    def as_dict(self) -> dict:
        return {"name": self.name, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "max_rel_diff_above_atol": self.max_rel_diff_above_atol, "atol": self.atol, "rtol": self.rtol,
                "passed": self.passed}


def significant_rel_diff(actual, expected, atol: float) -> float:
    """max |a - e| / |e| over the elements with |e| > atol (0 when there are none): the relative error
    of near-zero references says nothing, and those elements are judged by atol anyway."""
    expected = np.asarray(expected, dtype=np.float32)
    keep = np.abs(expected) > atol
    if expected.shape != np.shape(actual) or not keep.any():
        return 0.0
    diff = np.abs(np.asarray(actual, dtype=np.float32) - expected)
    return float(np.divide(diff, np.abs(expected), out=np.zeros_like(diff), where=keep).max())


@dataclass
class Comparison:
    checks: list[CheckStats]
    greedy: dict
    reference_tokens: list[int]
    reference_logits: list = field(default_factory=list)  # last-position logits per step
    first_results: object = None  # Polygraphy RunResults of the prefill step (saved for --load-outputs)
    first_feed: dict = field(default_factory=dict)


REFERENCE_NAME = "pytorch-reference"


def reference_feeds(reference, prompt_ids: list[int], decode_steps: int):
    """Yield (feed, reference outputs) along the reference's greedy path."""
    feed = OrderedDict({INPUT_IDS: np.array([prompt_ids], dtype=np.int64), PAST_LEN: np.zeros(1, dtype=np.int64)})
    caches = reference.empty_caches(1)
    names = cache_names(len(caches) // 2, INPUT_PREFIX)
    feed.update(zip(names, caches))
    for _ in range(decode_steps + 1):
        out = reference.run(feed)
        yield feed, out
        token = int(np.argmax(out[LOGITS][0, -1]))
        feed = OrderedDict({INPUT_IDS: np.array([[token]], dtype=np.int64), PAST_LEN: out[PRESENT_LEN]})
        feed.update((n, out[present_name(n)]) for n in names)


@contextmanager
def _stats_only_when_logged():
    """Polygraphy builds its per-output statistics text (mean, median, quantiles: sorts of every output)
    before asking the logger whether to print it; on 50M-element logits that was half of validation.
    Skip building it while the logger would drop it. The comparison itself is untouched."""
    from polygraphy.comparator import util as comp_util
    from polygraphy.logger import G_LOGGER

    originals = {name: getattr(comp_util, name) for name in ("log_output_stats", "log_compared_output_stats")}

    def gated(fn):
        return lambda *args, **kwargs: fn(*args, **kwargs) if G_LOGGER.module_severity.get() <= G_LOGGER.INFO else None

    for name, fn in originals.items():
        setattr(comp_util, name, gated(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(comp_util, name, fn)


@dataclass
class Candidate:
    """A compiled graph to validate: its Polygraphy runner, and optionally where its free-running greedy
    decode gets another step function than the runner: `greedy_step(active runner)` (e.g. the FastStep
    inside FastRunner, which updates its caches in place, with no second session)."""

    runner: object
    greedy_step: object = None


CARRIED = "carried rows"  # the check on the cache rows a decode step copies through


def carried_rows(past: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Which rows of a decode step's present cache (axis 2) the reference copied unchanged from the
    step's input cache: all but the one it wrote (a full layer appends, a lazy layer overwrites a ring slot)."""
    carried = np.zeros(present.shape[2], dtype=bool)
    overlap = min(past.shape[2], present.shape[2])
    carried[:overlap] = (present[:, :, :overlap] == past[:, :, :overlap]).all(axis=(0, 1, 3))
    return carried


class _Tally:
    """One candidate's statistics over the reference's path.

    Prefill outputs are compared whole. A decode step mostly copies each cache through; comparing
    those copies with a tolerance every step cost most of validation and proves less than asking for
    them bit for bit. So in decode the rows a step writes (and its logits and present_len) are kept and
    compared with the tolerance in one Polygraphy pass after the last step, and the rows it carries
    over must equal the reference's exactly (the `present (carried rows)` check, atol 0).
    """

    def __init__(self, candidate: Candidate, tol: Tolerance, compare):
        from ltexport.validate.runner_step import RunnerStep

        self.candidate, self.tol, self.compare = candidate, tol, compare
        self.step = RunnerStep(candidate.runner)
        self.stats: dict[str, CheckStats] = {}
        self.first_results = self.first_feed = self.prefilled = None
        self.decode_out: dict[str, list] = {}
        self.decode_ref: dict[str, list] = {}
        self.carried = CheckStats(f"decode/{OUTPUT_PREFIX} ({CARRIED})", 0.0, 0.0)

    def add(self, index: int, feed, ref_out, carried: dict) -> None:
        """carried: {present name: carried_rows mask} for a decode step."""
        out = self.step.infer(feed)
        if index == 0:
            self.first_results, self.first_feed = self._compare("prefill", out, ref_out), feed
            # the runner's own prefill is where its free-running greedy decode starts
            self.prefilled = (out[LOGITS][0, -1], out[PRESENT_LEN], [out[present_name(n)] for n in self.step.cache_names])
            return
        if any(out[name].shape != ref.shape for name, ref in ref_out.items() if name in out):
            self._compare("decode", out, ref_out)  # Polygraphy reports what differs, step by step
            return
        for name, ref in ref_out.items():
            got = out.get(name)
            if name in carried and got is not None:
                self._check_carried(got, ref, carried[name])
                got, ref = got[:, :, ~carried[name]], ref[:, :, ~carried[name]]
            self.decode_ref.setdefault(name, []).append(np.ravel(ref))
            if got is not None:
                self.decode_out.setdefault(name, []).append(np.ravel(got))

    def _check_carried(self, got: np.ndarray, ref: np.ndarray, carried: np.ndarray) -> None:
        same = (got == ref).all(axis=(0, 1, 3))
        if not same[carried].all():
            rows = carried & ~same
            diff = np.abs(got[:, :, rows].astype(np.float64) - ref[:, :, rows])
            self.carried.max_abs_diff = max(self.carried.max_abs_diff, float(np.nan_to_num(diff, nan=np.inf).max()))
            self.carried.passed = False

    def _compare(self, phase: str, out: dict, ref_out: dict):
        from polygraphy.comparator import Comparator, IterationResult, RunResults

        name = self.candidate.runner.name
        results = RunResults([(name, [IterationResult(out, runner_name=name)]),
                              (REFERENCE_NAME, [IterationResult(ref_out, runner_name=REFERENCE_NAME)])])
        accuracy = Comparator.compare_accuracy(results, compare_func=self.compare, fail_fast=False)
        for accuracy_result in accuracy:  # one per compare function: a {runner pair: [iteration]} dict
            for output, result in next(iter(accuracy_result.values()))[0].items():
                group = f"{phase}/{_group(output)}"
                self.stats.setdefault(group, CheckStats(group, self.tol.atol, self.tol.rtol)).add(
                    result, out[output], ref_out[output])
        return results

    def finish(self, prompt_ids, tokens, logits, greedy: bool) -> Comparison:
        if self.decode_ref:
            joined = lambda kept: OrderedDict((n, np.concatenate(arrays)) for n, arrays in kept.items())
            self._compare("decode", joined(self.decode_out), joined(self.decode_ref))
        checks = list(self.stats.values())
        if self.decode_ref:
            checks.append(self.carried)
        agreement = {}
        if greedy:  # another step than the runner prefills for itself
            own = self.candidate.greedy_step and self.candidate.greedy_step(self.candidate.runner)
            agreement = greedy_agreement(own or self.step, prompt_ids, tokens, logits, self.tol,
                                         None if own else self.prefilled)
        return Comparison(checks, agreement, tokens, logits, self.first_results, self.first_feed)


def compare_backends(candidates: list[Candidate], reference, prompt_ids: list[int], decode_steps: int, tol: Tolerance,
                     greedy: bool = True) -> list[Comparison]:
    """Every candidate against `reference` (a TorchStep) along one pass of the reference's greedy path:
    the reference runs once however many graphs are compared. Then each candidate's free-running greedy
    decode (greedy_agreement)."""
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # one line per build, not per step
    compare = SimpleCompareFunc(atol=tol.atol, rtol=tol.rtol)
    tokens, logits = [], []
    with ExitStack() as stack:
        for candidate in candidates:
            stack.enter_context(candidate.runner)
        stack.enter_context(_stats_only_when_logged())
        bar = stack.enter_context(progress(decode_steps + 1, "validating: reference and backend, step by step"))
        tallies = [_Tally(c, tol, compare) for c in candidates]
        for index, (feed, ref_out) in enumerate(reference_feeds(reference, prompt_ids, decode_steps)):
            carried = {} if index == 0 else {
                name: carried_rows(feed[past_name(name)], ref) for name, ref in ref_out.items() if is_cache_output(name)}
            for tally in tallies:  # the reference already ran on this feed to choose the path: reuse its outputs
                tally.add(index, feed, ref_out, carried)
            last = ref_out[LOGITS][0, -1]
            tokens.append(int(np.argmax(last)))
            logits.append(last.astype(np.float32))
            bar.update()
        return [tally.finish(prompt_ids, tokens, logits, greedy) for tally in tallies]


def compare_backend(runner, reference, prompt_ids: list[int], decode_steps: int, tol: Tolerance,
                    greedy: bool = True) -> Comparison:
    """One runner against `reference` (compare_backends)."""
    return compare_backends([Candidate(runner)], reference, prompt_ids, decode_steps, tol, greedy)[0]


def _group(output_name: str) -> str:
    return OUTPUT_PREFIX if is_cache_output(output_name) else output_name


def _greedy_tokens(step, prompt_ids: list[int], steps: int, prefilled=None):
    """Greedy tokens from `step`, starting from its prefill outputs (last logits, present_len, caches)
    when the caller already has them."""
    if prefilled is None:
        yield from iter_tokens(step, step.empty_caches(1), prompt_ids, steps)
        return
    last, past_len, caches = prefilled
    for index in range(steps):
        token = int(np.argmax(last))
        yield token
        if index + 1 < steps:
            logits, past_len, caches = step(np.array([[token]], dtype=np.int64), past_len, caches)
            last = np.asarray(logits)[0, -1]


def greedy_agreement(backend_step, prompt_ids: list[int], reference_tokens: list[int],
                     reference_logits: list[np.ndarray], tol: Tolerance, prefilled=None) -> dict:
    """The backend decodes on its own caches; does it pick the reference's tokens?

    Up to the first mismatch both saw the same tokens, so the reference's logits at that step tell
    whether it was a near-tie (the two tokens' reference logits within the tolerance): a rounding
    difference, not a compilation error. A near-tie is reported and passes; anything else fails.
    """
    with progress(len(reference_tokens), "validating: backend greedy decode") as bar:
        tokens = []
        for token in _greedy_tokens(backend_step, prompt_ids, len(reference_tokens), prefilled):
            tokens.append(token)
            bar.update()
    mismatch = next((i for i, (a, b) in enumerate(zip(tokens, reference_tokens)) if a != b), None)
    result = {"steps": len(reference_tokens), "tokens_match": mismatch is None, "first_mismatch": mismatch}
    if mismatch is not None:
        logits = reference_logits[mismatch]
        want, got = logits[reference_tokens[mismatch]], logits[tokens[mismatch]]
        result["near_tie"] = bool(want - got <= tol.atol + tol.rtol * abs(want))
    return result


def greedy_passed(greedy: dict) -> bool:
    return greedy.get("tokens_match", True) or greedy.get("near_tie", False)
