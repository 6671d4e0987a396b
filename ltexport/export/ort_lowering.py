"""The ONNX Runtime lowering: a lean decode graph beside the portable model.onnx, built for speed.

model.onnx (SinkWindowAttention nodes + local function) stays what TensorRT and any ONNX consumer
reads. This module writes OUT/model.ort.onnx for ONNX Runtime's CPU kernels, from the same hybrid
skeleton and over the same weight file (its initializers are model.onnx's, by reference):
- ORT's fused ops where the exporter's graph spells them out: SimplifiedLayerNormalization,
  SkipSimplifiedLayerNormalization, RotaryEmbedding, FusedMatMul; about 12 nodes per full layer.
- Full layers: com.microsoft.GroupQueryAttention (RoPE inside, GQA without repeating K/V) over a
  static-capacity cache that is the past and the present buffer at once, so it is updated in place.
- Lazy layers: attention over [ring, new tokens] as two score blocks (no copy of the ring), then
  ScatterND writes the new tokens into their ring slots (in place when present is bound to past).
  Masks, slots and write indices are computed once per call for all lazy layers.
Cache layouts and names: ltexport.export.contract (ORT_MODEL_FILE and below).

Two ONNX Runtime facts shape it: the planner never reuses a graph input in place, so in-place
updates rely on the caller binding each present output to its past input (IOBinding); and nothing
orders a ScatterND on the ring after the MatMuls that read it, so the scatters take their indices
through a zero derived from the logits' shape: they run after everything else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ltexport.errors import LtexportError
from ltexport.export.contract import (
    CAPACITY_DIM, INPUT_IDS, INPUT_PREFIX, LOGITS, NUM_LOGITS, ORT_GRAPH_KEY, ORT_MODEL_FILE, OUTPUT_PREFIX,
    PAST_LEN, PRESENT_LEN, RING_SCRATCH,
)
from ltexport.export.weight_data import TRANSPOSE_KEY

GRAPH_VERSION = 1
_MS = "com.microsoft"
_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # inv_freq fixed: one cos/sin table serves every length
_ONNX_TYPES = {"torch.float32": TensorProto.FLOAT, "torch.float16": TensorProto.FLOAT16}


class _Graph:
    """Node builder: `g.op("MatMul", a, b)` appends a node and returns its output name(s)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", **attrs):
        base = f"/{len(self.nodes)}_{op_type}"
        names = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def named(self, op_type: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], domain=domain or None, **attrs))
        return output

    def const(self, value, dtype=np.int64) -> str:
        name = f"/const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def add_initializer(self, tensor: onnx.TensorProto) -> str:
        if tensor.name not in self._names:
            self._names.add(tensor.name)
            self.initializers.append(tensor)
        return tensor.name


def lowering_blocker(hybrid) -> str | None:
    """Why this model cannot be lowered (None: it can)."""
    config = hybrid.layers[0].self_attn.config
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in _ROPE_TYPES:
        return f"its RoPE type {rope!r} changes with the sequence length"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"its activation {config.hidden_act!r} is not SiLU"
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        return "it rotates only part of each head"
    if str(hybrid.lm_head.weight.dtype) not in _ONNX_TYPES:
        return f"ONNX Runtime on CPU has no {hybrid.lm_head.weight.dtype} kernels"
    return None


def lower(hybrid, portable: Path, out: Path | None = None) -> Path:
    """Write the ONNX Runtime graph for `hybrid` (a HybridModel, parameters real or meta) beside the
    portable graph `portable` (OUT/model.onnx), reading its weights by reference."""
    reason = lowering_blocker(hybrid)
    if reason:
        raise LtexportError(f"cannot build the fast ONNX Runtime graph: {reason}; use model.onnx")
    out = Path(out or Path(portable).parent / ORT_MODEL_FILE)
    if out.parent.resolve() != Path(portable).parent.resolve():
        raise ValueError(f"{out} must sit beside {portable}: it reads that graph's weight file by relative path")
    weights = _Weights(onnx.load(str(portable), load_external_data=False), hybrid.source_names)
    g = _Graph()
    io = _graph_io(hybrid)
    _decoder(g, hybrid, weights)
    graph = helper.make_graph(g.nodes, "ltexport-ort", io[0], io[1], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(_MS, 1)],
                              producer_name="ltexport", ir_version=10)
    plan = hybrid.plan
    meta = {"version": GRAPH_VERSION, "sink": plan.sink, "window": plan.window, "prefill": plan.prefill,
            "lazy_layers": plan.lazy_layers, "num_layers": plan.num_layers, "ring_scratch": RING_SCRATCH,
            "max_positions": _positions(hybrid),
            # ORT's windowed GroupQueryAttention wants a cache of at least its window
            "min_capacity": max((w for i, w in enumerate(hybrid.sliding_windows) if w and not plan.is_lazy(i)), default=0)}
    helper.set_model_props(model, {ORT_GRAPH_KEY: json.dumps(meta)})
    onnx.save_model(model, str(out))
    return out


# ---------------------------------------------------------------- graph I/O and weights


def _dims(hybrid):
    attn = hybrid.layers[0].self_attn
    config = attn.config
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    return heads, kv, attn.head_dim


def _elem(hybrid) -> int:
    return _ONNX_TYPES[str(hybrid.lm_head.weight.dtype)]


def _positions(hybrid) -> int:
    return int(getattr(hybrid.layers[0].self_attn.config, "max_position_embeddings", 0) or 8192)


def _graph_io(hybrid):
    plan, elem = hybrid.plan, _elem(hybrid)
    _, kv, dim = _dims(hybrid)
    ring = plan.sink + plan.window + RING_SCRATCH
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info(PAST_LEN, TensorProto.INT64, ["batch"])]
    outputs = [helper.make_tensor_value_info(LOGITS, elem, ["batch", "logit_seq", hybrid.lm_head.out_features]),
               helper.make_tensor_value_info(PRESENT_LEN, TensorProto.INT64, ["batch"])]
    for i in range(plan.num_layers):
        slots = ring if plan.is_lazy(i) else CAPACITY_DIM
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"{INPUT_PREFIX}.{i}.{kind}", elem, ["batch", kv, slots, dim]))
            outputs.append(helper.make_tensor_value_info(f"{OUTPUT_PREFIX}.{i}.{kind}", elem, ["batch", kv, slots, dim]))
    inputs.append(helper.make_tensor_value_info(NUM_LOGITS, TensorProto.INT64, [1]))
    return inputs, outputs


class _Weights:
    """The portable graph's weight initializers, found by the hybrid's parameter names."""

    def __init__(self, portable: onnx.ModelProto, source_names: dict[str, list[str]]):
        self.tensors = {t.name: t for t in portable.graph.initializer}
        self.source_names = source_names

    def get(self, param: str) -> tuple[onnx.TensorProto, bool]:
        """(initializer, stored transposed as [in, out])."""
        for name in self.source_names.get(param, [param]):
            tensor = self.tensors.get(name)
            if tensor is not None:
                transposed = any(m.key == TRANSPOSE_KEY and m.value == "1,0" for m in tensor.metadata_props)
                return tensor, transposed
        raise LtexportError(f"model.onnx has no weight for {param}; rebuild it with `ltexport build`")


def _linear(g: _Graph, w: _Weights, x: str, module, name: str) -> str:
    tensor, transposed = w.get(f"{name}.weight")
    weight = g.add_initializer(tensor)
    y = g.op("MatMul", x, weight if transposed else g.op("Transpose", weight, perm=[1, 0]))
    if getattr(module, "bias", None) is not None:
        y = g.op("Add", y, g.add_initializer(w.get(f"{name}.bias")[0]))
    return y


# ---------------------------------------------------------------- the decoder


def _decoder(g: _Graph, hybrid, w: _Weights) -> str:
    plan = hybrid.plan
    shared = _shared_values(g, hybrid)
    embed = g.add_initializer(w.get("embed_tokens.weight")[0])
    residual = g.op("Gather", embed, INPUT_IDS)
    first = hybrid.layers[0].input_layernorm
    x = g.op("SimplifiedLayerNormalization", residual, g.add_initializer(w.get("layers.0.input_layernorm.weight")[0]),
             axis=-1, epsilon=float(first.variance_epsilon), stash_type=1)
    scatters = []
    for i, layer in enumerate(hybrid.layers):
        p = f"layers.{i}"
        attn = layer.self_attn
        q, k, v = (_linear(g, w, x, getattr(attn, f"{n}_proj"), f"{p}.self_attn.{n}_proj") for n in "qkv")
        window = hybrid.sliding_windows[i]
        if plan.is_lazy(i) or not _gqa_ok(hybrid):
            bias, index = (shared["bias"], shared["ring_index"]) if plan.is_lazy(i) else _cache_mask(g, shared, window)
            out, write = _two_block_attention(g, hybrid, shared, i, q, k, v, float(attn.scaling), bias)
            scatters.append((*write, index))
        else:
            out = _full_attention(g, hybrid, shared, i, q, k, v, float(attn.scaling), window)
        o = _linear(g, w, out, attn.o_proj, f"{p}.self_attn.o_proj")
        post = layer.post_attention_layernorm
        x, residual = _skip_norm(g, residual, o, g.add_initializer(w.get(f"{p}.post_attention_layernorm.weight")[0]),
                                 post.variance_epsilon)
        mlp = _mlp(g, w, x, layer.mlp, f"{p}.mlp")
        last = i + 1 == len(hybrid.layers)
        norm_name, norm = ("norm", hybrid.norm) if last else (f"layers.{i + 1}.input_layernorm", hybrid.layers[i + 1].input_layernorm)
        x, residual = _skip_norm(g, residual, mlp, g.add_initializer(w.get(f"{norm_name}.weight")[0]), norm.variance_epsilon)
    logits = _lm_head(g, w, hybrid, x, shared)
    _write_caches(g, scatters, logits)
    return logits


def _skip_norm(g: _Graph, residual: str, add: str, weight: str, eps: float) -> tuple[str, str]:
    """(RMSNorm(residual + add) * weight, residual + add)."""
    out, _, _, total = g.op("SkipSimplifiedLayerNormalization", residual, add, weight, outputs=4, domain=_MS,
                            epsilon=float(eps))
    return out, total


def _mlp(g: _Graph, w: _Weights, x: str, mlp, name: str) -> str:
    gate = _linear(g, w, x, mlp.gate_proj, f"{name}.gate_proj")
    up = _linear(g, w, x, mlp.up_proj, f"{name}.up_proj")
    act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) * up; ORT fuses QuickGelu
    return _linear(g, w, act, mlp.down_proj, f"{name}.down_proj")


def _lm_head(g: _Graph, w: _Weights, hybrid, x: str, shared: dict) -> str:
    """Logits of the last `num_logits` positions (0 or more than the call's tokens: all of them)."""
    keep = NUM_LOGITS
    use_all = g.op("Or", g.op("LessOrEqual", keep, g.const([0])), g.op("Greater", keep, shared["T"]))
    start = g.op("Where", use_all, g.const([0]), g.op("Sub", shared["T"], keep))
    x = g.op("Slice", x, start, shared["T"], g.const([1]))
    tensor, transposed = w.get("lm_head.weight")
    weight = g.add_initializer(tensor)
    return g.named("MatMul", [x, weight if transposed else g.op("Transpose", weight, perm=[1, 0])], LOGITS)


# ---------------------------------------------------------------- values shared by every layer


def _shared_values(g: _Graph, hybrid) -> dict:
    """Lengths, GQA's seqlens, RoPE tables, and for lazy layers the masks and ring write indices."""
    heads, kv, dim = _dims(hybrid)
    T = g.op("Shape", INPUT_IDS, start=1, end=2)  # [1]
    present = g.named("Add", [PAST_LEN, T], PRESENT_LEN)  # [B]
    s = {"T": T, "present": present,
         "seqlens": g.op("Cast", g.op("Sub", present, g.const([1])), to=TensorProto.INT32),
         "total": g.op("Cast", g.op("ReduceMax", present, keepdims=0), to=TensorProto.INT32)}
    s["cos"], s["sin"] = _rope_tables(g, hybrid, dim)
    s.update(_token_values(g, kv, T), groups=heads // kv)
    if hybrid.plan.lazy_layers:
        s.update(_lazy_values(g, hybrid.plan, s, present))
    return s


def _gqa_ok(hybrid) -> bool:
    """ONNX Runtime's CPU GroupQueryAttention needs head_dim % 16 == 0; other full layers take the
    two-block attention over their static buffer."""
    return _dims(hybrid)[2] % 16 == 0


def _token_values(g: _Graph, kv: int, T: str) -> dict:
    """Positions of the new tokens and the pieces of a ScatterND index [B,Hkv,T,3]."""
    zero, one = g.const(0), g.const(1)
    t_range = g.op("Range", zero, g.op("Squeeze", T, g.const([0])), one)  # [T]
    start = g.op("Unsqueeze", PAST_LEN, g.const([1]))  # [B,1]
    batch = g.op("Shape", INPUT_IDS, start=0, end=1)
    b_idx = g.op("Reshape", g.op("Range", zero, g.op("Squeeze", batch, g.const([0])), one), g.const([-1, 1, 1]))
    return {"t_range": t_range, "start": start, "position_ids": g.op("Add", start, t_range), "batch": batch,  # [B,T]
            "index_shape": g.op("Concat", batch, g.const([kv]), T, axis=0), "b_idx": b_idx,
            "h_idx": g.const(np.arange(kv).reshape(1, kv, 1)), "batch_t": g.op("Concat", batch, T, axis=0)}


def _scatter_index(g: _Graph, s: dict, slot: str) -> str:
    """[B,Hkv,T,3] ScatterND index writing token t of row b to `slot` [B,T] of every kv head."""
    parts = (s["b_idx"], s["h_idx"], g.op("Unsqueeze", slot, g.const([1])))
    return g.op("Concat", *(g.op("Unsqueeze", g.op("Expand", p, s["index_shape"]), g.const([3])) for p in parts), axis=3)


def _cache_mask(g: _Graph, s: dict, window) -> tuple[str, str]:
    """(bias [B,1,1,T,C+T], write index) of a full layer's static buffer: slot j holds position j,
    valid below past_len; the model's own window keeps keys above q - window."""
    key = ("cache", window)
    if key not in s:
        slots = g.op("Range", g.const(0), g.op("Squeeze", g.op("Shape", f"{INPUT_PREFIX}.0.key", start=2, end=3), g.const([0])), g.const(1))
        cache_ok = g.op("Less", g.op("Unsqueeze", slots, g.const([0])), s["start"])  # [B,C]
        cache_ok = g.op("Unsqueeze", cache_ok, g.const([1]))  # [B,1,C]
        tk, tq = g.op("Unsqueeze", s["t_range"], g.const([0])), g.op("Unsqueeze", s["t_range"], g.const([1]))
        new_ok = g.op("LessOrEqual", tk, tq)
        if window:
            q = g.op("Unsqueeze", s["position_ids"], g.const([2]))  # [B,T,1]
            cache_ok = g.op("And", cache_ok, g.op("Greater", g.op("Unsqueeze", slots, g.const([0])), g.op("Sub", q, g.const(window))))
            new_ok = g.op("And", new_ok, g.op("Less", g.op("Sub", tq, tk), g.const(window)))
        s[key] = (_bias(g, s, cache_ok, g.op("Unsqueeze", new_ok, g.const([0])), g.op("Shape", slots)),
                  _scatter_index(g, s, s["position_ids"]))
    return s[key]


def _bias(g: _Graph, s: dict, cache_ok: str, new_ok: str, cache_len: str) -> str:
    """Masks [B or 1, T or 1, C] and [B or 1, T, T] -> additive bias [B,1,G*T,C+T] (0 or -inf), rows
    in the (query head in its group, token) order of the two-block attention's queries."""
    cache_ok = g.op("Expand", cache_ok, g.op("Concat", s["batch_t"], cache_len, axis=0))
    new_ok = g.op("Expand", new_ok, g.op("Concat", s["batch_t"], g.op("Shape", s["t_range"]), axis=0))
    bias = g.op("Where", g.op("Concat", cache_ok, new_ok, axis=2), g.const(0.0, np.float32), g.const(-math.inf, np.float32))
    keys = g.op("Shape", bias, start=2, end=3)
    tiled = g.op("Expand", g.op("Unsqueeze", bias, g.const([1, 2])),
                 g.op("Concat", s["batch"], g.const([1, s["groups"]]), s["T"], keys, axis=0))  # [B,1,G,T,C+T]
    return g.op("Reshape", tiled, g.op("Concat", s["batch"], g.const([1, -1]), keys, axis=0))


def _rope_tables(g: _Graph, hybrid, dim: int) -> tuple[str, str]:
    """cos/sin [max_positions, dim/2] from the model's own rotary module (scaling included)."""
    import torch

    positions = torch.arange(_positions(hybrid)).unsqueeze(0)
    with torch.no_grad():
        cos, sin = hybrid.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
    dtype = np.float16 if _elem(hybrid) == TensorProto.FLOAT16 else np.float32
    half = dim // 2
    return g.const(cos[0, :, :half].numpy(), dtype), g.const(sin[0, :, :half].numpy(), dtype)


def _lazy_values(g: _Graph, plan, s: dict, present: str) -> dict:
    S, W = plan.sink, plan.window
    q_pos = s["position_ids"]
    # write slot of each new token; a token that a later one of this call overwrites goes to scratch
    win_slot = g.op("Add", g.const(S), g.op("Mod", g.op("Sub", q_pos, g.const(S)), g.const(W)))
    slot = g.op("Where", g.op("Less", q_pos, g.const(S)), q_pos, win_slot)
    superseded = g.op("And", g.op("GreaterOrEqual", q_pos, g.const(S)),
                      g.op("Less", g.op("Add", q_pos, g.const(W)), g.op("Unsqueeze", present, g.const([1]))))
    slot = g.op("Where", superseded, g.const(S + W), slot)  # [B,T]
    return {"bias": _lazy_bias(g, plan, s), "ring_index": _scatter_index(g, s, slot)}


def _lazy_bias(g: _Graph, plan, s: dict) -> str:
    """Additive mask [B,1,1,T,ring+T] over keys [ring slots before this call, new tokens].

    A ring slot holds the position ltexport.hybrid.sink_window.slot_positions gives; streaming also
    drops keys at or below p - W unless they are sinks. Ring keys are older than every new token.
    """
    S, W = plan.sink, plan.window
    start, q_pos, t_range = s["start"], s["position_ids"], s["t_range"]
    slots = np.arange(S + W + RING_SCRATCH)
    is_sink = g.const(slots < S, np.bool_)
    last = g.op("Sub", start, g.const(S + 1))  # [B,1] offset of the newest window position
    win_pos = g.op("Sub", g.op("Add", g.const(S), last), g.op("Mod", g.op("Sub", last, g.const(slots - S)), g.const(W)))
    pos = g.op("Where", is_sink, g.const(slots), win_pos)  # [B,ring]
    valid = g.op("And", g.op("Less", pos, start), g.op("Or", is_sink, g.op("GreaterOrEqual", pos, g.const(S))))
    ring_ok = g.op("Unsqueeze", g.op("And", valid, g.const(slots < S + W, np.bool_)), g.const([1]))  # [B,1,ring]
    tk, tq = g.op("Unsqueeze", t_range, g.const([0])), g.op("Unsqueeze", t_range, g.const([1]))  # [1,T], [T,1]
    new_ok = g.op("Unsqueeze", g.op("LessOrEqual", tk, tq), g.const([0]))  # [1,T,T] causal
    if plan.prefill != "dense":
        k_pos, q = g.op("Unsqueeze", pos, g.const([1])), g.op("Unsqueeze", q_pos, g.const([2]))  # [B,1,ring], [B,T,1]
        ring_ok = g.op("And", ring_ok, g.op("Or", g.op("Less", k_pos, g.const(S)), g.op("Greater", k_pos, g.op("Sub", q, g.const(W)))))
        new_sink = g.op("Less", g.op("Unsqueeze", q_pos, g.const([1])), g.const(S))  # [B,1,T] new keys that are sinks
        new_ok = g.op("And", new_ok, g.op("Or", new_sink, g.op("Less", g.op("Sub", tq, tk), g.const(W))))  # [B,T,T]
    return _bias(g, s, ring_ok, new_ok, g.const([S + W + RING_SCRATCH]))


# ---------------------------------------------------------------- attention


def _full_attention(g: _Graph, hybrid, s: dict, i: int, q: str, k: str, v: str, scale: float, window) -> str:
    heads, kv, _ = _dims(hybrid)
    past = [f"{INPUT_PREFIX}.{i}.key", f"{INPUT_PREFIX}.{i}.value"]
    node = helper.make_node(
        "GroupQueryAttention", [q, k, v, *past, s["seqlens"], s["total"], s["cos"], s["sin"]],
        [f"/attn_{i}", f"{OUTPUT_PREFIX}.{i}.key", f"{OUTPUT_PREFIX}.{i}.value"], domain=_MS,
        num_heads=heads, kv_num_heads=kv, scale=scale, do_rotary=1, rotary_interleaved=0,
        local_window_size=int(window) if window else -1)
    g.nodes.append(node)
    return node.output[0]


def _two_block_attention(g: _Graph, hybrid, s: dict, i: int, q: str, k: str, v: str, scale: float, bias: str):
    """Attention over layer i's cache as it was before this call (a lazy ring, or a static buffer)
    plus the new tokens, as two score blocks under one softmax; `bias` masks both. Returns
    (output [B,T,Hq*D], (layer, new keys, new values) to write once everything has read the cache)."""
    heads, kv, dim = _dims(hybrid)
    f32 = _elem(hybrid) != TensorProto.FLOAT
    rope = dict(domain=_MS, interleaved=0)
    q = g.op("RotaryEmbedding", q, s["position_ids"], s["cos"], s["sin"], num_heads=heads, **rope)
    k = g.op("RotaryEmbedding", k, s["position_ids"], s["cos"], s["sin"], num_heads=kv, **rope)
    groups = heads // kv
    q5 = g.op("Transpose", g.op("Reshape", q, g.const([0, 0, kv, groups, dim])), perm=[0, 2, 3, 1, 4])  # [B,Hkv,G,T,D]
    q4 = g.op("Reshape", q5, g.const([0, 0, -1, dim]))  # [B,Hkv,G*T,D]: one GEMM per kv head reads its cache once
    k4 = g.op("Transpose", g.op("Reshape", k, g.const([0, 0, kv, dim])), perm=[0, 2, 1, 3])  # [B,Hkv,T,D]
    v4 = g.op("Transpose", g.op("Reshape", v, g.const([0, 0, kv, dim])), perm=[0, 2, 1, 3])
    cache_k, cache_v = f"{INPUT_PREFIX}.{i}.key", f"{INPUT_PREFIX}.{i}.value"
    new_k, new_v = k4, v4
    if f32:  # the op's contract: fp32 softmax and accumulation
        q4, cache_k, cache_v, new_k, new_v = (g.op("Cast", t, to=TensorProto.FLOAT) for t in (q4, cache_k, cache_v, new_k, new_v))
    scores = g.op("Concat", *(g.op("FusedMatMul", q4, keys, domain=_MS, transB=1, alpha=scale) for keys in (cache_k, new_k)), axis=-1)
    probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)  # [B,Hkv,G*T,C+T]
    sizes = g.op("Concat", g.op("Shape", f"{INPUT_PREFIX}.{i}.key", start=2, end=3), s["T"], axis=0)
    p_cache, p_new = g.op("Split", probs, sizes, axis=-1, outputs=2)
    out = g.op("Add", g.op("MatMul", p_cache, cache_v), g.op("MatMul", p_new, new_v))  # [B,Hkv,G*T,D]
    out = g.op("Reshape", out, g.const([0, 0, groups, -1, dim]))  # [B,Hkv,G,T,D]
    out = g.op("Reshape", g.op("Transpose", out, perm=[0, 3, 1, 2, 4]), g.const([0, 0, heads * dim]))
    if f32:
        out = g.op("CastLike", out, q)
    return out, (i, k4, v4)


def _write_caches(g: _Graph, writes: list, after: str) -> None:
    """ScatterND the new tokens into their cache slots, ordered after `after` (the logits) by taking
    the indices through a zero computed from its shape."""
    if not writes:
        return
    zero = g.op("Mul", g.op("Shape", after, start=0, end=1), g.const([0]))
    late = {}
    for i, k4, v4, index in writes:
        if index not in late:
            late[index] = g.op("Add", index, zero)
        for kind, update in (("key", k4), ("value", v4)):
            g.named("ScatterND", [f"{INPUT_PREFIX}.{i}.{kind}", late[index], update], f"{OUTPUT_PREFIX}.{i}.{kind}")


def lower_for_build(source, plan, dtype: str, out_dir: Path, log=None) -> Path | None:
    """Lower the build's model.onnx in out_dir (from the source's weightless skeleton); None, with a
    note, when this model cannot be lowered (ONNX Runtime then runs model.onnx)."""
    from ltexport.export.contract import MODEL_FILE
    from ltexport.hybrid.model import HybridModel

    hybrid = HybridModel(source.skeleton(dtype, plan.num_layers), plan).eval()
    reason = lowering_blocker(hybrid)
    if reason:
        (log or _stderr)(f"note: no fast ONNX Runtime graph ({ORT_MODEL_FILE}) for this model: {reason}; ONNX Runtime runs model.onnx")
        return None
    return lower(hybrid, Path(out_dir) / MODEL_FILE)


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)
