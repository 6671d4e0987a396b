"""The PyTorch hybrid reference as a numpy step function (same interface as backends.ort.OrtStep)."""

import numpy as np
import torch

from ltexport.hybrid.caches import INPUT_PREFIX, cache_names, empty_caches
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
        caches = [torch.from_numpy(np.asarray(feed[name])) for name in feed if name.startswith("past_key_values.")]
        out = self.hybrid(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["past_len"]),
                          *[c.to(self.dtype) for c in caches])
        names = ["logits", "present_len"] + [n.replace("past_key_values.", "present.") for n in feed if n.startswith("past_key_values.")]
        return dict(zip(names, (_to_numpy(t) for t in out)))

    def __call__(self, input_ids, past_len, caches):
        feed = {"input_ids": input_ids, "past_len": past_len}
        feed.update(zip(cache_names(len(caches) // 2, INPUT_PREFIX), caches))
        out = self.run(feed)
        return out["logits"], out["present_len"], [v for k, v in out.items() if k.startswith("present.")]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: compare bf16 tensors as fp32.
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
