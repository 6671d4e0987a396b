"""Quality cost of the conversion (information, not a gate): hybrid vs the original full-attention model."""

import numpy as np
import torch


@torch.no_grad()
def quality_drift(original_model, prompt_ids: list[int], tokens: list[int], hybrid_logits: list[np.ndarray]) -> dict:
    """Teacher-forced on the hybrid's greedy tokens: compare next-token logits step by step."""
    ids = torch.tensor([prompt_ids + tokens[:-1]])
    logits = original_model(input_ids=ids, use_cache=False, logits_to_keep=len(tokens)).logits[0].float().numpy()
    hybrid = np.stack(hybrid_logits)
    agree = (logits.argmax(-1) == hybrid.argmax(-1)).mean()
    return {"steps": len(tokens), "max_abs_logit_diff": float(np.abs(logits - hybrid).max()),
            "top1_agreement": float(agree)}
