"""Text in, text out over a build directory (ONNX Runtime or the TensorRT engine), for `ltexport generate`."""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ltexport.build import read_build_info
from ltexport.errors import LtexportError
from ltexport.generation import Sampling, iter_tokens


def load_build_tokenizer(out: Path, info: dict, trust_remote_code: bool = False):
    if info.get("tokenizer") == "byte":
        from ltexport.models.tokenizers import ByteTokenizer

        return ByteTokenizer()
    if info.get("tokenizer") == "none":
        raise LtexportError(f"{out} was built from a model directory without a tokenizer; add one to the model directory and rebuild")
    from ltexport.models.sources import load_auto_tokenizer

    return load_auto_tokenizer(out / "tokenizer", trust_remote_code)


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(prompt)


def generate_text(out: Path, prompt: str, max_new_tokens: int, sampling: Sampling, chat: bool = True,
                  backend: str = "auto", trust_remote_code: bool = False) -> Iterator[str]:
    """backend: ort, trt (the build's engine), or auto (trt for a TensorRT build where TensorRT imports)."""
    out = Path(out)
    info = read_build_info(out)
    if not (out / "model.onnx").is_file():
        raise LtexportError(f"{out} has no model.onnx; rebuild it with `ltexport build`")
    tokenizer = load_build_tokenizer(out, info, trust_remote_code)
    ids = encode_prompt(tokenizer, prompt, chat)
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
    """A step function over the build: ONNX Runtime on model.onnx, or the TensorRT engine model.plan."""
    from ltexport.backends import trt

    if backend == "auto":
        backend = "trt" if info.get("backend") == "trt" and trt.is_available() else "ort"
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
