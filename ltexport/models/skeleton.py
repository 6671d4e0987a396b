"""Models without weights ("skeletons"), and filling them from a weight source tensor by tensor.

A skeleton is the transformers model with its parameters on the meta device (no memory) and its
buffers real: RoPE's inv_freq is computed from the config and is in no checkpoint. The exporter
traces a skeleton; the reference is a skeleton whose parameters were then loaded.
"""

import copy

import torch
from torch import nn

from ltexport.errors import LtexportError


def empty_model(config, dtype: torch.dtype):
    import transformers
    from accelerate import init_empty_weights

    from ltexport.models.adapters import adapter_for

    model_cls = getattr(transformers, adapter_for(config).architecture)
    config = copy.deepcopy(config)  # models set their attention implementation on their config
    with init_empty_weights(include_buffers=False):
        model = model_cls._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.tie_weights()  # accelerate's empty init leaves tied parameters as separate meta tensors
    return model.eval()


def truncated_config(config, num_layers: int | None):
    """The config of the first `num_layers` decoder layers (+ final norm + lm_head); None: all."""
    if num_layers is None or num_layers == config.num_hidden_layers:
        return config
    config = copy.deepcopy(config)
    config.num_hidden_layers = num_layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2)
        config.layer_types = config.layer_types[:num_layers]
    return config


def shared_names(source_model: nn.Module, model: nn.Module) -> dict[str, list[str]]:
    """Each parameter of `model` -> every name the same tensor has in `source_model`'s state dict.

    Tied embeddings give one tensor two names (model.embed_tokens.weight, lm_head.weight); a
    checkpoint may hold either.
    """
    by_tensor: dict[int, list[str]] = {}
    for name, param in source_model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), []).append(name)
    return {name: by_tensor.get(id(param), [name]) for name, param in model.named_parameters(remove_duplicate=False)}


def pick_name(names: list[str], available: set[str], where: str) -> str:
    for name in names:
        if name in available:
            return name
    raise LtexportError(f"{where} has no tensor {' or '.join(names)}; is it a checkpoint of this model's architecture?")


def load_weights(model: nn.Module, weights, dtype: torch.dtype, where: str = "the checkpoint",
                 prefix: str = "", names: dict[str, list[str]] | None = None,
                 into: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Replace every (meta) parameter of `model` by its tensor from `weights`, converted to `dtype`.

    `prefix` and `names`: `model` is the submodule of that name in a model whose `shared_names`
    are `names` (a layer of a skeleton: only that layer's weights are read). `into`: every
    parameter gets a tensor of its own (never the weight source's, which a converted tensor of the
    same dtype would be), filled in place where `into` has one of that name and shape (another
    layer's, from unload_weights): copying into mapped memory is several times faster than
    faulting in new pages.
    """
    names = shared_names(model, model) if names is None else names
    available = weights.names()
    loaded: dict[int, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        for param_name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in loaded:
                local = f"{module_name}.{param_name}" if module_name else param_name
                source = pick_name(names[f"{prefix}.{local}" if prefix else local], available, where)
                tensor = check_shape(weights.get(source), tuple(param.shape), source)
                loaded[id(param)] = nn.Parameter(_owned(tensor, dtype, into, local), requires_grad=False)
            module._parameters[param_name] = loaded[id(param)]
    return model


def _owned(tensor: torch.Tensor, dtype: torch.dtype, into: dict | None, name: str) -> torch.Tensor:
    if into is None:
        return tensor.to(dtype)
    buffer = into.get(name)
    if buffer is None or buffer.shape != tensor.shape or buffer.dtype != dtype:
        buffer = torch.empty(tensor.shape, dtype=dtype)
    return buffer.copy_(tensor)


def unload_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Back to meta parameters (shapes only); returns the released tensors by name within `model`
    (free once dropped, or refilled by `load_weights(into=...)`). Buffers stay."""
    released = {}
    for module_name, module in model.named_modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                released[f"{module_name}.{name}" if module_name else name] = param.data
                module._parameters[name] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False)
    return released


def check_shape(tensor: torch.Tensor, shape: tuple, name: str) -> torch.Tensor:
    if tuple(tensor.shape) != tuple(shape):
        raise LtexportError(
            f"checkpoint tensor {name} has shape {list(tensor.shape)} but the config expects {list(shape)}; "
            "check that config.json belongs to these weights"
        )
    return tensor


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (tied ones once), from a skeleton: shapes only."""
    return sum(p.numel() for p in model.parameters())
