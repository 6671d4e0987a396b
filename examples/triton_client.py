#!/usr/bin/env python
"""Greedy generation against an ltexport hybrid served by Triton Inference Server.

The model keeps its KV caches as Triton implicit state, so one generation is one Triton sequence
and every request carries only `input_ids`: the prompt first, then one token per step.

    # with a Hugging Face tokenizer directory (tokenizer.json etc.)
    python examples/triton_client.py --tokenizer /path/to/hf_model --prompt "The capital of France is"
    # or with token ids
    python examples/triton_client.py --ids 1,4093,3575 --max-new-tokens 16

Needs `pip install tritonclient[grpc]` (and `transformers` for --tokenizer).
"""

from __future__ import annotations

import argparse
import random
import sys

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
    args = p.parse_args(argv)
    if args.tokenizer and args.prompt is None:
        p.error("--tokenizer needs --prompt")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")
    return args


def _infer(client, model, version, ids, sequence_id, start, end):
    x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
    x.set_data_from_numpy(np.asarray([ids], dtype=np.int64))
    result = client.infer(model, [x], model_version=version, outputs=[grpcclient.InferRequestedOutput("logits")],
                          sequence_id=sequence_id, sequence_start=start, sequence_end=end)
    return int(np.argmax(result.as_numpy("logits")[0, -1]))


def generate(client, model, prompt_ids, max_new_tokens, *, sequence_id, eos_id=None, prefill_chunk=0,
             model_version="", on_token=None) -> list[int]:
    """Greedy decoding as one Triton sequence; returns the new token ids (EOS included if hit)."""
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    step = prefill_chunk if prefill_chunk > 0 else len(prompt_ids)
    chunks = [prompt_ids[i:i + step] for i in range(0, len(prompt_ids), step)]
    out: list[int] = []
    ended = False
    try:
        for k, chunk in enumerate(chunks):
            last = k == len(chunks) - 1
            ended = last and max_new_tokens == 1
            tok = _infer(client, model, model_version, chunk, sequence_id, k == 0, ended)
        while True:
            out.append(tok)
            if on_token:
                on_token(tok)
            if ended or tok == eos_id:
                break
            ended = len(out) == max_new_tokens - 1  # this request yields the last token we want
            tok = _infer(client, model, model_version, [tok], sequence_id, False, ended)
    finally:
        if not ended:
            # close the sequence so Triton frees its slot now, not after the idle timeout
            try:
                _infer(client, model, model_version, [out[-1] if out else prompt_ids[-1]], sequence_id, False, True)
            except Exception:  # noqa: BLE001 - best effort while unwinding
                pass
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
    generate(client, args.model, prompt_ids, args.max_new_tokens, sequence_id=sequence_id, eos_id=eos_id,
             prefill_chunk=args.prefill_chunk, model_version=args.model_version, on_token=on_token)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
