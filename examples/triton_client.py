#!/usr/bin/env python
"""Greedy generation against an ltexport hybrid served by Triton Inference Server, over gRPC.

One generation is one Triton sequence and every request carries only `input_ids`: the prompt
first, then one token per step. Both flavours of `ltexport package` speak this protocol: the
implicit-state one (Triton keeps the caches) and `--runtime python` (ltexport's model keeps them).

    # with a Hugging Face tokenizer directory (a build's OUT/tokenizer, or a model directory)
    python examples/triton_client.py --tokenizer OUT/tokenizer --prompt "The capital of France is"
    # or with token ids (prints the generated ids)
    python examples/triton_client.py --ids 1,4093,3575 --max-new-tokens 16

Prints the prompt and the streamed continuation on stdout, and the timing on stderr.
Needs `pip install tritonclient[grpc]` (and `transformers` for --tokenizer).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint (default: %(default)s)")
    p.add_argument("--model", default="ltexport", help="model name in the repository (default: %(default)s)")
    p.add_argument("--model-version", default="", help="model version (default: the server's choice)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", help="local Hugging Face tokenizer/model directory; use with --prompt")
    src.add_argument("--ids", help="comma-separated prompt token ids, e.g. 1,2,3")
    p.add_argument("--prompt", help="prompt text (with --tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--eos-id", type=int, default=None, help="stop token id (default: the tokenizer's eos)")
    p.add_argument("--prefill-chunk", type=int, default=0,
                   help="send the prompt in chunks of N tokens (0: one request); smaller logits messages, "
                        "but lazy layers of a 'dense' prefill plan then see only sink+window of earlier chunks")
    p.add_argument("--sequence-id", type=int, default=None, help="Triton sequence id (default: random)")
    p.add_argument("--show-ids", action="store_true", help="also print the generated token ids on stderr")
    args = p.parse_args(argv)
    if args.tokenizer and args.prompt is None:
        p.error("--tokenizer needs --prompt")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")
    return args


class Sequence:
    """One Triton sequence: send() a chunk of token ids, get the greedy next token; close() ends it."""

    def __init__(self, client, model, sequence_id, model_version=""):
        self.client, self.model, self.sequence_id, self.model_version = client, model, sequence_id, model_version
        self.started = self.ended = False

    def send(self, ids, end=False) -> int:
        x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
        x.set_data_from_numpy(np.asarray([ids], dtype=np.int64))
        result = self.client.infer(self.model, [x], model_version=self.model_version,
                                   outputs=[grpcclient.InferRequestedOutput("logits")],
                                   sequence_id=self.sequence_id, sequence_start=not self.started, sequence_end=end)
        self.started, self.ended = True, end
        return int(np.argmax(result.as_numpy("logits")[0, -1]))

    def close(self, last_token) -> None:
        """End the sequence (one extra request) so the server frees it now, not after the idle timeout."""
        if self.started and not self.ended:
            self.send([last_token], end=True)


def generate(client, model, prompt_ids, max_new_tokens, *, sequence_id, eos_id=None, prefill_chunk=0,
             model_version="", on_token=None, timing=None) -> list[int]:
    """Greedy decoding as one Triton sequence; returns the new token ids (EOS included if hit).

    timing: a dict that receives first_token_s (prompt request(s)) and decode_s (the other requests).
    """
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    seq = Sequence(client, model, sequence_id, model_version)
    step = prefill_chunk if prefill_chunk > 0 else len(prompt_ids)
    chunks = [prompt_ids[i:i + step] for i in range(0, len(prompt_ids), step)]
    out: list[int] = []
    t0 = time.perf_counter()
    try:
        for k, chunk in enumerate(chunks):
            tok = seq.send(chunk, end=k == len(chunks) - 1 and max_new_tokens == 1)
        t1 = time.perf_counter()
        while True:
            out.append(tok)
            if on_token:
                on_token(tok)
            if seq.ended or tok == eos_id:
                break
            tok = seq.send([tok], end=len(out) == max_new_tokens - 1)  # the last request yields the last token
    finally:
        try:
            seq.close(out[-1] if out else prompt_ids[-1])
        except Exception:  # noqa: BLE001 - best effort while unwinding
            pass
    if timing is not None:
        timing.update(first_token_s=t1 - t0, decode_s=time.perf_counter() - t1)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        prompt_ids = tokenizer(args.prompt)["input_ids"]
        eos_id = args.eos_id if args.eos_id is not None else tokenizer.eos_token_id
    else:
        prompt_ids = [int(t) for t in args.ids.split(",") if t.strip()]
        eos_id = args.eos_id

    client = grpcclient.InferenceServerClient(args.url)
    sequence_id = args.sequence_id if args.sequence_id is not None else random.randrange(1, 2**63)
    generated: list[int] = []
    printed = ""

    def on_token(tok):
        nonlocal printed
        generated.append(tok)
        if tokenizer is None:
            print(tok, end=" ", flush=True)
            return
        text = tokenizer.decode(generated, skip_special_tokens=True)
        print(text[len(printed):], end="", flush=True)
        printed = text

    if tokenizer is not None:
        print(args.prompt, end="", flush=True)
    timing: dict = {}
    generate(client, args.model, prompt_ids, args.max_new_tokens, sequence_id=sequence_id, eos_id=eos_id,
             prefill_chunk=args.prefill_chunk, model_version=args.model_version, on_token=on_token, timing=timing)
    print()
    decoded = len(generated) - 1  # the first token comes with the prompt request
    rate = f", {decoded / timing['decode_s']:.1f} tokens/s after it" if decoded and timing["decode_s"] > 0 else ""
    print(f"{len(prompt_ids)} prompt tokens, {len(generated)} generated: first token after "
          f"{timing['first_token_s']:.3f} s{rate}", file=sys.stderr)
    if args.show_ids:
        print("ids: " + " ".join(map(str, generated)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
