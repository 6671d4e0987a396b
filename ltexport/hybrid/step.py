"""The PyTorch hybrid reference as a numpy step function (same interface as backends.ort.OrtStep)."""

import numpy as np
import torch

from ltexport.export.contract import INPUT_IDS, INPUT_PREFIX, LOGITS, PAST_LEN, PRESENT_LEN, cache_names, is_cache_input, is_cache_output, present_name
from ltexport.hybrid.caches import empty_caches
from ltexport.hybrid.model import HybridModel


class TorchStep:
    def __init__(self, hybrid: HybridModel):
        self.hybrid = hybrid.eval()
        self.dtype = hybrid.lm_head.weight.dtype

    def empty_caches(self, batch: int) -> list[np.ndarray]:
        return [_to_numpy(c) for c in empty_caches(self.hybrid.plan, batch, self.dtype)]

    @torch.no_grad()
    def run(self, feed: dict) -> dict:
        """Graph-style call: named inputs -> named outputs (numpy)."""
        caches = [torch.from_numpy(np.asarray(feed[name])) for name in feed if is_cache_input(name)]
        out = self.hybrid(torch.from_numpy(feed[INPUT_IDS]), torch.from_numpy(feed[PAST_LEN]),
                          *[c.to(self.dtype) for c in caches])
        names = [LOGITS, PRESENT_LEN] + [present_name(n) for n in feed if is_cache_input(n)]
        return dict(zip(names, (_to_numpy(t) for t in out)))

    def __call__(self, input_ids, past_len, caches):
        feed = {INPUT_IDS: input_ids, PAST_LEN: past_len}
        feed.update(zip(cache_names(len(caches) // 2, INPUT_PREFIX), caches))
        out = self.run(feed)
        return out[LOGITS], out[PRESENT_LEN], [v for k, v in out.items() if is_cache_output(k)]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: compare bf16 tensors as fp32.
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
