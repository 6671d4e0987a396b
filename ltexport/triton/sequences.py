"""The KV caches of live sequences, held by one model instance and keyed by correlation id.

This is what the python-backend flavour (`ltexport package --runtime python`) runs inside Triton:
Triton's sequence batcher sends each request with START / END / CORRID controls, and the instance
keeps each sequence's caches between requests. Triton does not tell a python model when it drops a
sequence for idleness, so `sweep()` frees sequences idle for longer than the configured
`max_sequence_idle_microseconds`; a timer thread calls it (python_model.py).

Thread-safe: requests and the idle sweep run on different threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ltexport.errors import LtexportError

_REMEMBER_ENDED = 1024  # ended sequence ids kept for a precise error message


class SequenceError(LtexportError):
    """A request this instance cannot serve (unknown or ended sequence, bad input_ids); sent back to the client."""


@dataclass
class _Sequence:
    past_len: np.ndarray
    caches: list
    last_used: float

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches)


class SequenceCaches:
    """Runs a step function (ltexport's OrtStep or the TensorRT RunnerStep) for many sequences.

    step(input_ids [1,T], past_len [1], caches) -> (logits, present_len, caches); step.empty_caches(1).
    idle_timeout_s: a sequence unused for longer than this is freed by sweep().
    vocab: token ids must lie in [0, vocab).
    """

    def __init__(self, step, idle_timeout_s: float, vocab: int, clock=time.monotonic):
        self.step = step
        self.idle_timeout_s = idle_timeout_s
        self.vocab = vocab
        self.clock = clock
        self._live: dict[int, _Sequence] = {}
        self._ended: OrderedDict[int, str] = OrderedDict()  # id -> why it is gone
        self._lock = threading.Lock()

    def run(self, corrid: int, input_ids: np.ndarray, start: bool, end: bool) -> np.ndarray:
        """One request of sequence `corrid`: returns logits [1, T, vocab]; frees the caches when `end`."""
        ids = self._check_ids(corrid, input_ids)
        with self._lock:
            if start:
                self._ended.pop(corrid, None)
                seq = _Sequence(np.zeros(1, np.int64), self.step.empty_caches(1), self.clock())
            else:
                seq = self._live.get(corrid)
                if seq is None:
                    raise SequenceError(self._gone_message(corrid))
            logits, past_len, caches = self.step(ids, seq.past_len, seq.caches)
            seq.past_len, seq.caches, seq.last_used = np.asarray(past_len), caches, self.clock()
            if end:
                self._forget(corrid, "has ended (its last request had END set)")
            else:
                self._live[corrid] = seq
        return logits

    def sweep(self) -> list[int]:
        """Free every sequence idle for longer than idle_timeout_s; returns their ids."""
        with self._lock:
            now = self.clock()
            idle = [cid for cid, seq in self._live.items() if now - seq.last_used > self.idle_timeout_s]
            for cid in idle:
                self._forget(cid, f"was idle for more than {self.idle_timeout_s:g} s and its caches were freed")
        return idle

    def clear(self) -> None:
        with self._lock:
            self._live.clear()

    @property
    def held(self) -> int:
        """Sequences whose caches this instance holds."""
        with self._lock:
            return len(self._live)

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(seq.nbytes for seq in self._live.values())

    def _forget(self, corrid: int, why: str) -> None:
        self._live.pop(corrid, None)
        self._ended[corrid] = why
        self._ended.move_to_end(corrid)
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)

    def _gone_message(self, corrid: int) -> str:
        why = self._ended.get(corrid, "is unknown to this model instance (no request with START was seen)")
        return f"sequence {corrid} {why}; start a new sequence with sequence_start=True"

    def _check_ids(self, corrid: int, input_ids) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1 or ids.dtype != np.int64:
            raise SequenceError(
                f"sequence {corrid}: input_ids must be INT64 [1, T] with T >= 1, got {ids.dtype} {list(ids.shape)}; "
                "send the prompt, then one token per request"
            )
        if ids.min() < 0 or ids.max() >= self.vocab:
            raise SequenceError(f"sequence {corrid}: token ids must lie in [0, {self.vocab}); "
                                "encode the prompt with the model's tokenizer")
        return ids
