"""`ltexport eval`: the original model and each hybrid on passkey retrieval and decode perplexity."""

import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ltexport.errors import LtexportError
from ltexport.evaluate import passkey as pk
from ltexport.evaluate.perplexity import decode_perplexity, perplexity_of
from ltexport.evaluate.select import drops
from ltexport.evaluate.steps import SharedPrefill, Variant, greedy, ort_variant, prefill, torch_variant
from ltexport.evaluate.streamed import Text, passkey_cell, passkey_text, score_texts, should_stream, streamed_variant
from ltexport.outputs import Marker
from ltexport.plan.identify import PlanConfig, check_config as check_plan_config, choose_lazy_layers, make_plan
from ltexport.plan.schema import Plan, load_plan
from ltexport.progress import progress

FORMAT = "ltexport-eval"
MARKER = Marker("eval.json", FORMAT, "an ltexport eval output")  # what lets a later eval replace its -o
DEFAULT_CONTEXTS = (1024, 2048, 4096)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)


@dataclass
class EvalConfig:
    model: str
    plans: list[Path] = field(default_factory=list)
    lazy_fractions: list[float] = field(default_factory=list)  # plans from one calibration run
    builds: list[Path] = field(default_factory=list)           # ONNX builds, run with ONNX Runtime
    genai: list[Path] = field(default_factory=list)            # onnxruntime-genai model directories
    genai_peers: bool = False                                  # build genai-full/-windowed from the first plan
    plan_config: PlanConfig | None = None                      # sink/window/calibration for lazy_fractions
    contexts: list[int] | None = None                          # None: DEFAULT_CONTEXTS that fit the model
    depths: list[float] = field(default_factory=lambda: list(DEFAULT_DEPTHS))
    digits: int = 5
    ppl_tokens: int | None = None  # None: min(256, half the shortest context)
    prefill_chunk: int = 1024
    score_chunk: int = 256
    chat: bool | None = None  # None: the tokenizer's chat template when it has one
    seed: int = 0
    trust_remote_code: bool = False  # passed to transformers when loading config, tokenizer and weights
    stream_layers: bool | None = None  # None: layer by layer only when the fp32 model does not fit in memory
    show_progress: bool = True
    log: object = field(default=print, repr=False)


def default_contexts(max_positions: int, margin: int) -> list[int]:
    fit = [c for c in DEFAULT_CONTEXTS if not max_positions or c + margin <= max_positions]
    return fit or [max_positions // 2]


def check_config(config: EvalConfig, spec) -> list[int]:
    """Argument errors before any weight is loaded; returns the contexts."""
    if not (config.plans or any(f > 0 for f in config.lazy_fractions) or config.builds or config.genai):
        raise LtexportError("nothing to compare with the original: pass --plan, --lazy-fractions, --build or --genai")
    if config.genai_peers and not config.plans:
        raise LtexportError("--genai-peers builds onnxruntime-genai's models for a plan's lazy layers; pass --plan")
    if config.stream_layers and (config.builds or config.genai or config.genai_peers):
        what = "--build" if config.builds else "--genai/--genai-peers"
        raise LtexportError(f"{what} runs ONNX graphs that hold the whole model, not layer by layer: "
                            "it cannot be evaluated layer by layer; drop --stream-layers")
    margin = config.digits + 4
    contexts = config.contexts or default_contexts(spec.max_positions, margin)
    if spec.max_positions and max(contexts) + margin > spec.max_positions:
        raise LtexportError(f"context {max(contexts)} + {margin} answer tokens exceeds the model's "
                            f"{spec.max_positions} positions; lower --contexts")
    if config.ppl_tokens is None:
        config.ppl_tokens = min(256, min(contexts) // 2)
    if not 1 <= config.ppl_tokens < min(contexts) // 2 + 1:
        raise LtexportError(f"--ppl-tokens must be between 1 and half the shortest context ({min(contexts) // 2})")
    if any(not 0 <= d <= 1 for d in config.depths):
        raise LtexportError(f"--depths must lie in [0, 1], got {config.depths}")
    if not 1 <= config.digits <= 18:
        raise LtexportError(f"--digits must be between 1 and 18, got {config.digits}")
    if config.lazy_fractions and config.plan_config:
        check_plan_config(replace(config.plan_config, lazy_fraction=max(config.lazy_fractions), layers=None),
                          spec.num_layers, spec.max_positions)
    for path in config.plans:
        load_plan(path).check_against(spec)
    for out in config.builds:
        _build_plan(Path(out), spec)
    return contexts


def make_variants(config: EvalConfig, source, model, log) -> list[Variant]:
    """model None: variants for the layer-streamed pass."""
    spec = source.spec()

    def variant(name, plan, origin=None):
        if model is None:
            return streamed_variant(name, plan, spec.sliding_window, origin)
        return torch_variant(name, model, plan, origin=origin)

    variants = []
    for path in config.plans:
        plan = load_plan(path)
        plan.check_against(spec)
        variants.append(variant(Path(path).stem, plan, origin=str(path)))
    for plan in fraction_plans(source, model, config, log):
        variants.append(variant(f"lazy-{plan.calibration['lazy_fraction']:g}", plan))
    for out in config.builds:
        variants.append(_build_variant(Path(out), spec))
    d = source.defaults
    original = Plan(model=spec.plan_header(), sink=d["sink"], window=d["window"], lazy_layers=[])
    return [variant("original", original), *_unique_names(variants)]


def fraction_plans(source, model, config: EvalConfig, log) -> list[Plan]:
    """One calibration run (lazy ratios measured once), then the layers of each fraction.
    model None: the calibration streams layer by layer too."""
    fractions = [f for f in config.lazy_fractions if f > 0]
    if not fractions:
        return []
    d = source.defaults
    plan_config = config.plan_config or PlanConfig(sink=d["sink"], window=d["window"], calib_tokens=d["calib_tokens"])
    plan_config = replace(plan_config, lazy_fraction=max(fractions), layers=None,
                          stream_layers=True if model is None else plan_config.stream_layers)
    base = make_plan(source, plan_config, progress=log, model=model)
    return [plan_for_fraction(base, f) for f in fractions]


def plan_for_fraction(base: Plan, fraction: float) -> Plan:
    return replace(base, lazy_layers=choose_lazy_layers(base.scores, fraction),
                   calibration={**base.calibration, "lazy_fraction": fraction}, metadata={})


def _build_plan(out: Path, spec) -> Plan:
    """The plan of a complete ONNX Runtime build for this model."""
    from ltexport.build_info import load_build

    info = load_build(out)
    if info.get("backend") != "ort":
        raise LtexportError(f"{out} was built for {info.get('backend')}; eval runs ONNX Runtime builds (ltexport build --backend ort)")
    plan = load_plan(out / "plan.json")
    plan.check_against(spec)
    return plan


def _build_variant(out: Path, spec) -> Variant:
    return ort_variant(f"build:{out.name}", out, _build_plan(out, spec), spec.sliding_window)


def _unique_names(variants: list[Variant]) -> list[Variant]:
    seen = {"original": 1}
    for v in variants:
        seen[v.name] = seen.get(v.name, 0) + 1
        if seen[v.name] > 1:
            v.name = f"{v.name}#{seen[v.name]}"
    return variants


def run_passkey(variants, model, tokenizer, contexts, config: EvalConfig) -> dict:
    chat = _chat(config, tokenizer)
    rng = np.random.default_rng(config.seed)
    cells = {v.name: [] for v in variants}
    eos = getattr(tokenizer, "eos_token_id", None)
    bar = progress(len(contexts) * len(config.depths) * len(variants), "passkey", config.show_progress)
    for context in contexts:
        for depth in config.depths:
            prompt = pk.build_prompt(tokenizer, context, depth, pk.make_key(rng, config.digits), chat)
            shared = SharedPrefill(model, prompt.ids, config.prefill_chunk)
            for v in variants:
                logits, past_len, caches = prefill(v, prompt.ids, config.prefill_chunk, shared)
                tokens = greedy(v.step, logits, past_len, caches, config.digits + 3, eos)
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                answer, correct = pk.score_answer(text, prompt.key)
                cells[v.name].append({"context": context, "depth": depth, "actual_depth": round(prompt.actual_depth, 4),
                                      "needle_position": prompt.needle_start, "key": prompt.key,
                                      "output": text, "answer": answer, "correct": correct})
                bar.update(1)
    bar.close()
    return {name: {"cells": c, **_accuracy(c)} for name, c in cells.items()}, chat


def _chat(config: EvalConfig, tokenizer) -> bool:
    return pk.uses_chat(tokenizer) if config.chat is None else config.chat


def _accuracy(cells: list[dict]) -> dict:
    by_context = {}
    for c in cells:
        by_context.setdefault(str(c["context"]), []).append(c["correct"])
    return {"accuracy": sum(c["correct"] for c in cells) / len(cells),
            "by_context": {k: sum(v) / len(v) for k, v in by_context.items()}}


def run_perplexity(variants, model, tokenizer, contexts, config: EvalConfig) -> tuple[dict, dict]:
    ids, text = _perplexity_ids(tokenizer, contexts)
    results = {v.name: {} for v in variants}
    bar = progress(len(contexts) * len(variants), "perplexity", config.show_progress)
    for context in contexts:
        window = ids[:context]
        shared = SharedPrefill(model, window[:-config.ppl_tokens], config.prefill_chunk)
        for v in variants:
            results[v.name][str(context)] = decode_perplexity(v, window, config.ppl_tokens, config.prefill_chunk,
                                                              config.score_chunk, shared)
            bar.update(1)
    bar.close()
    return results, text


def run_streamed(source, variants, tokenizer, contexts, config: EvalConfig) -> tuple[dict, bool, dict, dict]:
    """Passkey and perplexity of every variant in one layer-streamed, teacher-forced pass (streamed.py)."""
    chat = _chat(config, tokenizer)
    rng = np.random.default_rng(config.seed)  # the same keys as the in-memory path
    prompts = [pk.build_prompt(tokenizer, c, d, pk.make_key(rng, config.digits), chat)
               for c in contexts for d in config.depths]
    keys = [pk.key_tokens(tokenizer, p.key) for p in prompts]
    ids, text = _perplexity_ids(tokenizer, contexts)
    n = config.ppl_tokens
    windows = [Text(ids[:c], c - n, range(c - n, c - 1)) for c in contexts]
    scores = score_texts(source, variants, [passkey_text(p, k) for p, k in zip(prompts, keys)] + windows,
                         config.show_progress)
    eos = getattr(tokenizer, "eos_token_id", None)
    passkey, ppl = {}, {}
    for i, v in enumerate(variants):
        cells = [passkey_cell(tokenizer, p, k, row[i]["argmax"], eos) for p, k, row in zip(prompts, keys, scores)]
        passkey[v.name] = {"cells": cells, **_accuracy(cells)}
        ppl[v.name] = {str(c): perplexity_of(row[i]["nll"]) for c, row in zip(contexts, scores[len(prompts):])}
    return passkey, chat, ppl, text


def _perplexity_ids(tokenizer, contexts) -> tuple[list[int], dict]:
    from ltexport.evaluate.texts import perplexity_text

    text = perplexity_text()
    ids = list(tokenizer.encode(text.text))[: max(contexts)]
    if len(ids) < max(contexts):
        raise LtexportError(f"the perplexity text has only {len(ids)} tokens; use --contexts up to {len(ids)}")
    return ids, {"source": text.source, "sha256": text.sha256, "tokens_used": max(contexts)}


def evaluate(config: EvalConfig) -> tuple[dict, list[Plan]]:
    """Runs everything; returns (results, plans made from --lazy-fractions)."""
    from ltexport.models.sources import resolve

    source = resolve(config.model, trust_remote_code=config.trust_remote_code)
    contexts = check_config(config, source.spec())
    timings = {}
    start = time.perf_counter()
    tokenizer, _ = source.text_tokenizer()
    pk.build_prompt(tokenizer, min(contexts), 0.5, "1" * config.digits, _chat(config, tokenizer))  # too short?
    streamed = should_stream(config, source, contexts)
    if streamed and (config.genai or config.genai_peers):  # chosen by the preflight, not asked for
        raise LtexportError("the model only fits layer by layer, but onnxruntime-genai models are scored beside the "
                            "whole in-memory model; drop --genai/--genai-peers or use a machine with more memory")
    model = None if streamed else source.load_model("fp32")
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    variants = make_variants(config, source, model, config.log)
    timings["calibrate"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="ltexport-eval-") as tmp:
        variants += _genai_variants(config, source, Path(tmp))
        return _evaluate(config, source, model, tokenizer, contexts, variants, timings, streamed)


def _genai_variants(config: EvalConfig, source, tmp: Path) -> list[Variant]:
    from ltexport.evaluate.steps import genai_variant

    dirs = {Path(d).name: Path(d) for d in config.genai}
    if config.genai_peers:
        from ltexport.bench.peers import build_peers

        dirs.update(build_peers(source, load_plan(config.plans[0]), tmp, log=config.log))
    return [genai_variant(name, d, source.spec()) for name, d in dirs.items()]


def _evaluate(config, source, model, tokenizer, contexts, variants, timings, streamed):
    longest = max(contexts)
    if all(v.evicts_at >= longest for v in variants[1:]):
        raise LtexportError(f"no context exceeds sink + window of the hybrids ({min(v.evicts_at for v in variants[1:])}): "
                            "nothing is evicted, so they cannot differ from the original; add a longer --contexts")
    start = time.perf_counter()
    if streamed:
        passkey, chat, ppl, text = run_streamed(source, variants, tokenizer, contexts, config)
        timings["layer_streamed_pass"] = time.perf_counter() - start
    else:
        passkey, chat = run_passkey(variants, model, tokenizer, contexts, config)
        timings["passkey"] = time.perf_counter() - start
        start = time.perf_counter()
        ppl, text = run_perplexity(variants, model, tokenizer, contexts, config)
        timings["perplexity"] = time.perf_counter() - start
    results = _assemble(config, source, contexts, variants, passkey, ppl, chat, text, timings, streamed)
    made = [v.plan for v in variants if v.name.startswith("lazy-") and v.origin is None]
    return results, made


def _assemble(config, source, contexts, variants, passkey, ppl, chat, text, timings, streamed=False) -> dict:
    entries = []
    for v in variants:
        entry = {**v.describe(), "passkey": passkey[v.name], "perplexity": ppl[v.name]}
        entries.append(entry)
    for v, entry in zip(variants[1:], entries[1:]):
        entry["drops"] = drops(entries[0], entry, v.evicts_at)
    settings = {"contexts": contexts, "depths": config.depths, "digits": config.digits, "chat_template": chat,
                "ppl_tokens": config.ppl_tokens, "prefill_chunk": config.prefill_chunk,
                "score_chunk": config.score_chunk, "seed": config.seed, "perplexity_text": text,
                "layer_streamed": streamed, "passkey_scoring": "teacher-forced" if streamed else "greedy"}
    return {"format": FORMAT, "version": 1, "model": config.model, "source": source.describe(),
            "settings": settings, "variants": entries, "timings_s": {k: round(t, 2) for k, t in timings.items()},
            "versions": _versions()}


def _versions() -> dict:
    import onnxruntime
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}
