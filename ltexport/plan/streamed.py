"""Lazy ratios measured layer by layer: a 7B model's calibration in a few GB.

The calibration tokens go through the model one decoder layer at a time (models/streaming.py):
only the hidden states [tokens, hidden] survive a layer; each layer's weights are read from the
checkpoint in fp32 just before it runs and freed after. Inside each layer the lazy ratio comes from
that layer's own query and key exactly as in the in-memory measurement (lazy_ratio.lazy_ratio), and
the layer's attention runs causally in query chunks (stream_attention.py). The embedding is loaded
for the first step only; the final norm and LM head are never needed.
"""

import torch

from ltexport.models.streaming import LayerStream
from ltexport.plan.lazy_ratio import lazy_ratio
from ltexport.plan.stream_attention import StreamCall, install
from ltexport.progress import progress


@torch.inference_mode()
def stream_lazy_ratios(source, ids: list[int], *, sink: int, window: int, last_queries: int,
                       show_progress: bool = True) -> list[float]:
    stream = LayerStream(source)
    install(stream.skeleton)
    (hidden,) = stream.embed([ids])
    rope = stream.rope(hidden)
    scores = []

    def measure(module, query, key, scale, sliding_window):
        scores.append(lazy_ratio(query, key, scale, sink=sink, window=window, last_queries=last_queries,
                                 sliding_window=sliding_window))

    bar = progress(stream.num_layers, "lazy ratios, layer by layer", show_progress)
    for index in range(stream.num_layers):
        with stream.layer(index) as layer:
            hidden = layer(hidden, attention_mask=None, position_embeddings=rope,
                           ltexport_stream=StreamCall(on_qk=measure))
        bar.update(1)
    bar.close()
    return scores
