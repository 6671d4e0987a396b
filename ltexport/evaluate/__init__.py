"""Quality evidence for a conversion: passkey retrieval and long-text perplexity, original vs hybrids.

The original full-attention model is the reference here (DESIGN.md: the quality question), not the
PyTorch hybrid (the compilation question, answered by `ltexport build`'s validation).
"""
