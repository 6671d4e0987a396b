"""ModelSpec: the few numbers ltexport needs about a model, read from its config before any weight."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int
    # Window of the original model's own sliding-window attention (Mistral), None for full attention.
    sliding_window: int | None = None

    def plan_header(self) -> dict:
        """The `model` block of plan.json: what a plan must match."""
        return {
            "architecture": self.architecture,
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
        }

    def as_dict(self) -> dict:
        return asdict(self)
