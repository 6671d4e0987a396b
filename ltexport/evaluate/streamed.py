"""`ltexport eval` layer by layer: passkey and decode perplexity of every variant in one teacher-forced pass.

Every text (a passkey prompt followed by its key, or a perplexity window) goes through the model one
decoder layer at a time (models/streaming.py), all texts and variants per layer, so each layer's
weights are read once per evaluation. Each position attends what the deployed hybrid would let it
see (plan/stream_attention.py rules):

- prompt positions (< prompt) are prefilled as deployed: full layers causal (within the model's own
  window); lazy layers with dense prefill causal over the whole prompt, with streaming prefill the
  sink + window mask;
- later positions are decode steps: a dense plan's lazy layer attends the S + W ring plus the token
  itself, i.e. sink + the last W + 1 positions; a streaming plan's the sink + the last W; full
  layers causal. Teacher-forced, this is exactly what one-token decode steps compute.

A dense variant whose prompt prefill equals the original model's (steps.can_transplant) computes
only its decode positions, reading the original's prompt keys and values at each layer, as the
in-memory path transplants the original's caches.

Scores, from the logits at `rows`:
- perplexity: the NLL of each next token, as evaluate/perplexity.py;
- passkey: greedy decoding would emit the key exactly when, at every key position, the argmax under
  the true prefix is the next key token. The argmaxes up to the first mismatch are exactly greedy's
  first tokens, so a cell's `output` is greedy's output up to and including the first token that
  leaves the key (or the one after it), and the cell is correct when the key was matched and that
  next token ends the number (score_answer on that output). Greedy decoding that reaches the key by
  another path (other text first, another tokenization) would count as correct in the in-memory
  scoring and not here.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ltexport import preflight
from ltexport.errors import LtexportError
from ltexport.evaluate import passkey as pk
from ltexport.evaluate.perplexity import log_softmax_nll
from ltexport.evaluate.steps import Variant, can_transplant
from ltexport.models.streaming import LayerStream, model_sizes
from ltexport.plan.schema import Plan
from ltexport.plan.stream_attention import CAUSAL, StreamCall, Visibility, install
from ltexport.progress import progress

BACKEND = "torch-streamed"


def should_stream(config, source, contexts: list[int]) -> bool:
    """Whether to evaluate layer by layer (`config`: an EvalConfig). Preflight, before any weight is
    loaded: the peak memory of both paths, from the skeleton and the texts' lengths."""
    if config.builds and config.stream_layers:
        raise LtexportError("--build runs an ONNX graph with ONNX Runtime, which holds the whole model: "
                            "it cannot be evaluated layer by layer; drop --stream-layers")
    sizes = model_sizes(source.skeleton("fp32"), source.config)
    fractions = [f for f in config.lazy_fractions if f > 0]
    variants = 1 + len(config.plans) + len(fractions) + len(config.builds)
    answer, cells = config.digits + 3, len(config.depths)
    tokens = sum(c * (cells + 1) + answer * cells for c in contexts)
    tails = (variants - 1) * len(contexts) * (cells * answer + config.ppl_tokens)
    rows = max(config.ppl_tokens, answer)

    def need(streamed):
        estimate = preflight.eval_memory(sizes, max(contexts), tokens + tails, rows, streamed, variants,
                                         config.prefill_chunk)
        if fractions:
            calib = config.plan_config.calib_tokens if config.plan_config else source.defaults["calib_tokens"]
            estimate = max(estimate, preflight.plan_memory(sizes, calib, 64, streamed))
        return estimate

    if config.builds:
        fix = "--build needs the whole fp32 model in memory: evaluate builds on a larger machine, or plans (--plan)"
        return preflight.choose_streaming(False, need(False), need(True), "evaluating", config.log, in_memory_fix=fix)
    return preflight.choose_streaming(config.stream_layers, need(False), need(True), "evaluating", config.log)


def streamed_variant(name: str, plan: Plan, model_window: int | None, origin: str | None = None) -> Variant:
    """A variant scored by the layer-streamed pass (no step: nothing is held in memory)."""
    return Variant(name, plan, step=None, backend=BACKEND, origin=origin, model_window=model_window)


@dataclass
class Text:
    """One token sequence of the pass."""

    ids: list[int]
    prompt: int    # positions >= prompt are decode steps
    rows: range    # positions whose next-token logits are scored


@dataclass
class Stream:
    """One variant's hidden states over positions start .. len(ids) - 1 of one text."""

    variant: Variant
    start: int     # > 0: the positions before come from the original model's stream
    hidden: torch.Tensor
    rope: tuple


def layer_call(plan: Plan, layer: int, prompt: int, start: int) -> StreamCall:
    """The attention rules of `plan`'s layer `layer` for queries from position `start` on."""
    if not plan.is_lazy(layer):
        return StreamCall(start=start)
    dense = plan.prefill == "dense"
    prefill = CAUSAL if dense else Visibility(window=plan.window, sink=plan.sink)
    decode = Visibility(window=plan.window + 1 if dense else plan.window, sink=plan.sink)
    return StreamCall(start=start, rules=[(prompt, prefill), (None, decode)], lazy=True)


@torch.inference_mode()
def score_texts(source, variants: list[Variant], texts: list[Text], show_progress: bool = True) -> list[list[dict]]:
    """variants[0] is the original (no lazy layers). Returns, per text and variant, {"argmax": [R]
    int64, "nll": float64 [R or R - 1]} over the text's rows (NLL where a next token exists)."""
    stream = LayerStream(source)
    install(stream.skeleton)
    table = _start_streams(stream, variants, texts)
    bar = progress(stream.num_layers, "eval, layer by layer", show_progress)
    for index in range(stream.num_layers):
        with stream.layer(index) as layer:
            for text, row in zip(texts, table):
                _run_layer(layer, index, text, row)
        bar.update(1)
    bar.close()
    with stream.head() as head:
        return [[_scores(head, text, s, row[0]) for s in row] for text, row in zip(texts, table)]


def _start_streams(stream: LayerStream, variants: list[Variant], texts: list[Text]) -> list[list[Stream]]:
    table = []
    for text, hidden in zip(texts, stream.embed([t.ids for t in texts])):
        row = []
        for i, v in enumerate(variants):
            start = text.prompt if i > 0 and can_transplant(v, text.prompt) else 0
            h = hidden[:, start:]
            row.append(Stream(v, start, h, stream.rope(h, start)))
        table.append(row)
    return table


def _run_layer(layer, index: int, text: Text, row: list[Stream]) -> None:
    base = row[0]
    call = StreamCall(capture=any(s.start for s in row[1:]))
    base.hidden = layer(base.hidden, attention_mask=None, position_embeddings=base.rope, ltexport_stream=call)
    for s in row[1:]:
        own = layer_call(s.variant.plan, index, text.prompt, s.start)
        if s.start:
            own.prefix = (call.kv[0][:, :, :s.start], call.kv[1][:, :, :s.start])
        s.hidden = layer(s.hidden, attention_mask=None, position_embeddings=s.rope, ltexport_stream=own)


def _scores(head, text: Text, s: Stream, base: Stream) -> dict:
    """Rows before the stream's start are prompt positions: the original's (equal by construction)."""
    shared = [r for r in text.rows if r < s.start]   # rows increase: the shared ones come first
    own = [r - s.start for r in text.rows if r >= s.start]
    hidden = torch.cat([base.hidden[0, shared], s.hidden[0, own]])
    logits = head(hidden).float().numpy()
    targets = np.array([text.ids[r + 1] for r in text.rows if r + 1 < len(text.ids)], dtype=np.int64)
    return {"nll": log_softmax_nll(logits[:len(targets)], targets), "argmax": logits.argmax(-1)}


def passkey_text(prompt: pk.PasskeyPrompt, key_ids: list[int]) -> Text:
    """The prompt then the key; rows: the prompt's last position and every key position."""
    ids = prompt.ids + key_ids
    return Text(ids, len(prompt.ids), range(len(prompt.ids) - 1, len(ids)))


def passkey_cell(tokenizer, prompt: pk.PasskeyPrompt, key_ids: list[int], argmax, eos: int | None) -> dict:
    """Greedy's output as far as teacher forcing determines it, and the verdict (see the module doc)."""
    matched = 0
    while matched < len(key_ids) and int(argmax[matched]) == key_ids[matched]:
        matched += 1
    emitted = key_ids[:matched] + [int(argmax[matched])]
    if emitted[-1] == eos:
        emitted.pop()
    text = tokenizer.decode(emitted, skip_special_tokens=True)
    answer, correct = pk.score_answer(text, prompt.key)
    return {"context": prompt.context, "depth": prompt.depth, "actual_depth": round(prompt.actual_depth, 4),
            "needle_position": prompt.needle_start, "key": prompt.key, "output": text, "answer": answer,
            "correct": correct and matched == len(key_ids), "key_tokens_matched": matched}
