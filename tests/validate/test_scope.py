"""Which part of a build is validated, from the memory each choice needs."""

import pytest

from ltexport.errors import LtexportError
from ltexport.plan.schema import Plan
from ltexport.preflight import validation_memory
from ltexport.validate.scope import choose_scope, prefix_plan

GB = 1e9


def plan(lazy=(5, 7), layers=8):
    return Plan(model={"architecture": "LlamaForCausalLM", "num_layers": layers, "num_kv_heads": 2, "head_dim": 16},
                sink=4, window=60, lazy_layers=list(lazy))


def need_per_layer(gb):
    """Validation memory that grows by `gb` per layer (None: all 8)."""
    return lambda layers: gb * GB * (8 if layers is None else layers)


def test_auto_validates_the_whole_model_when_it_fits_comfortably():
    scope = choose_scope("auto", plan(), need_per_layer(1), available=20 * GB)
    assert scope.layers is None and scope.reason.startswith("auto")


def test_auto_takes_the_shortest_prefix_with_a_lazy_layer_when_that_fits():
    scope = choose_scope("auto", plan(), need_per_layer(1.5), available=16 * GB)  # all: 12 GB > 60% of 16
    assert scope.layers == 6  # layers 0..5: the first lazy layer is 5


def test_auto_falls_back_to_two_layers_and_says_the_op_is_not_covered():
    scope = choose_scope("auto", plan(), need_per_layer(2), available=10 * GB)
    assert scope.layers == 2 and "no lazy layer in this prefix" in scope.reason


def test_explicit_choices_are_refused_when_they_cannot_fit():
    with pytest.raises(LtexportError, match="full validation needs ~16.0 GB .* --validate-layers N"):
        choose_scope("all", plan(), need_per_layer(2), available=10 * GB)
    with pytest.raises(LtexportError, match="validating 6 layers needs"):
        choose_scope("6", plan(), need_per_layer(2), available=10 * GB)
    with pytest.raises(LtexportError, match="free memory"):
        choose_scope("auto", plan(), need_per_layer(20), available=10 * GB)


def test_n_equal_to_all_layers_is_the_whole_model():
    assert choose_scope("8", plan(), need_per_layer(1), available=100 * GB).layers is None


def test_prefix_plan_keeps_only_its_lazy_layers():
    cut = prefix_plan(plan(lazy=[1, 5]), 3)
    assert cut.num_layers == 3 and cut.lazy_layers == [1] and (cut.sink, cut.window) == (4, 60)


def test_a_7b_in_fp16_is_not_fully_validated_on_24_gb():
    full = validation_memory(7_241_732_096, "fp16", 1088, 32000, 32)
    prefix = validation_memory(262_144_000 + 4096 + 2 * 218_112_000, "fp16", 1088, 32000, 32)
    assert full > 24 * GB and prefix < 0.6 * 20 * GB
