"""Speed and memory evidence: the hybrid vs the same model with no lazy layers vs transformers' generate."""
