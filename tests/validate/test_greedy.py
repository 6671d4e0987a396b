import numpy as np

from ltexport.validate.compare import Tolerance, greedy_agreement, greedy_passed


class ScriptedStep:
    """A backend that emits a fixed token sequence (one-hot logits)."""

    def __init__(self, tokens, vocab=8):
        self.tokens, self.vocab, self.calls = tokens, vocab, 0

    def empty_caches(self, batch):
        return []

    def __call__(self, ids, past_len, caches):
        logits = np.zeros((1, ids.shape[1], self.vocab), dtype=np.float32)
        logits[0, -1, self.tokens[self.calls]] = 1.0
        self.calls += 1
        return logits, past_len + ids.shape[1], caches


def reference_logits(tokens, margins, vocab=8):
    out = []
    for token, margin in zip(tokens, margins):
        row = np.zeros(vocab, dtype=np.float32)
        row[token] = margin
        out.append(row)
    return out


TOL = Tolerance(atol=1e-2, rtol=0.0)


def test_matching_tokens_pass():
    g = greedy_agreement(ScriptedStep([1, 2, 3]), [0], [1, 2, 3], reference_logits([1, 2, 3], [5, 5, 5]), TOL)
    assert g == {"steps": 3, "tokens_match": True, "first_mismatch": None} and greedy_passed(g)


def test_near_tie_mismatch_is_reported_and_passes():
    # At step 1 the reference preferred token 2 over token 4 by only 0.005 < atol.
    g = greedy_agreement(ScriptedStep([1, 4, 3]), [0], [1, 2, 3], reference_logits([1, 2, 3], [5, 0.005, 5]), TOL)
    assert g["first_mismatch"] == 1 and g["near_tie"] and greedy_passed(g)


def test_clear_mismatch_fails():
    g = greedy_agreement(ScriptedStep([1, 4, 3]), [0], [1, 2, 3], reference_logits([1, 2, 3], [5, 3.0, 5]), TOL)
    assert g["first_mismatch"] == 1 and not g["near_tie"] and not greedy_passed(g)
