"""Text in, text out over a build directory (ONNX Runtime or the TensorRT engine), for `ltexport generate`."""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ltexport.build_info import load_build
from ltexport.errors import LtexportError
from ltexport.generation import Sampling, iter_tokens


def load_build_tokenizer(out: Path, info: dict, trust_remote_code: bool = False):
    if info.get("tokenizer") == "byte":
        from ltexport.models.tokenizers import ByteTokenizer

        return ByteTokenizer()
    if info.get("tokenizer") == "none":
        raise LtexportError(f"{out} was built from a model directory without a tokenizer; add one to the model directory and rebuild")
    from ltexport.models.sources import load_auto_tokenizer

    if not (out / "tokenizer").is_dir():  # never let transformers take the path for a model hub id
        raise LtexportError(f"{out} has no tokenizer/ directory; rebuild it with `ltexport build`")
    return load_auto_tokenizer(out / "tokenizer", trust_remote_code)


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
        raise LtexportError("--prompt is not valid UTF-8 text; pass the prompt as UTF-8") from None
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(prompt)


def fit_positions(info: dict, prompt_tokens: int, max_new_tokens: int, log=None) -> int:
    """max_new_tokens, cut so that prompt + generated tokens fit the model's positions."""
    limit = model_positions(info)
    if prompt_tokens < 1:
        raise LtexportError("--prompt is empty; pass some text")
    if limit is None:
        return max_new_tokens
    if prompt_tokens >= limit:
        raise LtexportError(f"the prompt is {prompt_tokens} tokens but the model has {limit} positions (prompt plus "
                            f"generated tokens); shorten the prompt to fewer than {limit} tokens")
    if prompt_tokens + max_new_tokens > limit:
        if log is not None:
            log(f"note: generating at most {limit - prompt_tokens} tokens, not {max_new_tokens}: the prompt "
                f"({prompt_tokens} tokens) plus generated tokens must fit the model's {limit} positions")
        return limit - prompt_tokens
    return max_new_tokens


def model_positions(info: dict) -> int | None:
    """The model's positions: recorded in build.json, or (older builds) read from the model's config."""
    if "format" in info:
        return info.get("max_positions")
    from ltexport.models.sources import resolve

    try:
        return resolve(info["model"]).spec().max_positions or None
    except LtexportError:
        return None


def generate_text(out: Path, prompt: str, max_new_tokens: int, sampling: Sampling, chat: bool = True,
                  backend: str = "auto", trust_remote_code: bool = False, log=None) -> Iterator[str]:
    """backend: ort, trt (the build's engine), or auto (trt for a TensorRT build where TensorRT imports).
    log: where notices go (e.g. that generation stops at the model's positions)."""
    out = Path(out)
    info = load_build(out)
    tokenizer = load_build_tokenizer(out, info, trust_remote_code)
    ids = encode_prompt(tokenizer, prompt, chat)
    max_new_tokens = fit_positions(info, len(ids), max_new_tokens, log)
    tokens: list[int] = []
    emitted = ""
    eos = getattr(tokenizer, "eos_token_id", None)
    with open_step(out, info, backend, len(ids) + max_new_tokens) as step:
        for token in iter_tokens(step, step.empty_caches(1), ids, max_new_tokens, sampling, eos_id=eos):
            tokens.append(token)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(emitted):]
                emitted = text


@contextmanager
def open_step(out: Path, info: dict, backend: str, context: int):
    """A step function over the build: ONNX Runtime on model.onnx, or the TensorRT engine model.plan.

    auto: the engine of a TensorRT build where TensorRT imports and a GPU is present, else ONNX Runtime."""
    from ltexport.backends import trt

    if backend == "auto":
        usable = info.get("backend") == "trt" and trt.is_available() and trt.cuda_device_count() > 0
        backend = "trt" if usable else "ort"
    if backend == "trt-rtx":
        trt.require_gpu(backend)
    if backend == "ort":
        from ltexport.backends.ort.fast import ort_step

        yield ort_step(out, num_logits=1)  # the fast graph, caches updated in place, where the build has one
        return
    limit = info.get("engine", {}).get("max_context")
    if limit is not None and context > limit:
        raise LtexportError(f"prompt plus --max-new-tokens is {context} tokens but the engine serves {limit}; "
                            f"shorten them or rebuild with --max-context {context}")
    from ltexport.validate.runner_step import RunnerStep

    with trt.trt_runner(out) as runner:
        yield RunnerStep(runner)
