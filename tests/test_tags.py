"""Tags derived from real catalogue cases: what each case exercises, in the dtype it runs in."""

from dataclasses import replace

import pytest

from lossoracle import specs
from lossoracle.tags import EDGE, KINDS, TAGS, case_tags, check_tags


def _tags(loss: str, case_id: str, dtype: str | None = None) -> set[str]:
    spec = specs.get(loss)
    case = next(c for c in spec.cases() if c.id == case_id)
    return set(case_tags(spec, case, dtype))


@pytest.mark.parametrize("loss, case, dtype, present, absent", [
    ("binary_cross_entropy_with_logits", "infinite_logits", None, {"infinite_input"}, {"ordinary"}),
    ("binary_cross_entropy_with_logits", "nan_propagates", None, {"nan_propagation", "zero_weights"}, {"ordinary"}),
    ("binary_cross_entropy_with_logits", "empty_mean", None, {"empty_input"}, {"ordinary", "large_reduction"}),
    ("binary_cross_entropy_with_logits", "tiny_logits", None, {"ordinary", "soft_targets"}, EDGE),
    ("binary_cross_entropy_with_logits", "tail_40", "float64", {"saturated_logits", "hard_labels"}, {"ordinary"}),
    # 11.125 saturates the float16 sigmoid ((11 + 1)·ln 2 = 8.3), not the float32 one (17.3)
    ("binary_cross_entropy_with_logits", "fp16_overflow_11", "float16", {"saturated_logits"}, {"ordinary"}),
    ("binary_cross_entropy_with_logits", "fp16_overflow_11", "float32", {"ordinary"}, {"saturated_logits"}),
    ("binary_cross_entropy_with_logits", "weights_with_zeros_none", None, {"zero_weights"}, {"ordinary"}),
    ("binary_cross_entropy_with_logits", "bad_target_shape", None, {"bad_input"}, {"ordinary"}),
    ("binary_cross_entropy", "endpoints_none", None, {"probability_endpoints"}, {"ordinary"}),
    ("binary_cross_entropy", "subnormal_float64", "float64", {"subnormal"}, {"ordinary"}),
    ("cross_entropy", "ignore_all_mean", None, {"all_ignored", "hard_labels"}, {"some_ignored", "soft_targets"}),
    ("cross_entropy", "ignore_some_mean", None, {"some_ignored"}, {"all_ignored"}),
    ("cross_entropy", "smoothing_0.1", None, {"soft_targets"}, {"hard_labels"}),
    ("cross_entropy", "prob_soft_mean", None, {"soft_targets", "unnormalised_rows"}, {"hard_labels"}),
    ("cross_entropy", "prob_onehot_weight", None, {"hard_labels"}, {"unnormalised_rows", "soft_targets"}),
    ("entropy", "unnormalised_below_one", None, {"unnormalised_rows"}, {"ordinary"}),
    ("entropy", "near_one_float64", None, {"ordinary"}, {"unnormalised_rows"}),
    ("box_iou", "touching", None, {"kink"}, {"ordinary"}),
    ("box_iou", "huge", "float32", {"huge_values"}, {"ordinary"}),  # 1e30: areas overflow float32
    ("box_iou", "huge", "float64", {"ordinary"}, {"huge_values"}),
    ("dynamic_task_priority", "k100_sum", None, {"large_reduction", "ordinary"}, EDGE),
    ("dice_loss", "near_perfect_softmax", "float32", {"saturated_logits"}, {"probability_endpoints"}),
    ("dice_loss", "ignore_index", None, {"some_ignored", "hard_labels"}, {"all_ignored"}),
])
def test_tags_of_catalogue_cases(loss, case, dtype, present, absent):
    tags = _tags(loss, case, dtype)
    assert present <= tags and not (absent & tags), tags


def test_every_catalogue_case_is_ordinary_or_an_edge_and_never_both():
    for name in specs.names():
        spec = specs.get(name)
        for case in spec.cases():
            for dtype in case.dtypes():
                tags = set(case_tags(spec, case, dtype))
                assert tags <= set(TAGS), (name, case.id, tags)
                assert tags & KINDS, (name, case.id, dtype)
                assert ("ordinary" in tags) != bool(tags & EDGE), (name, case.id, dtype, tags)


def test_an_explicit_case_tag_is_added_to_the_derived_ones():
    spec = specs.get("binary_cross_entropy_with_logits")
    case = next(c for c in spec.cases() if c.id == "tiny_logits")
    tags = case_tags(spec, replace(case, tags=("kink",)))
    assert "kink" in tags and "ordinary" not in tags


def test_unknown_tags_are_named():
    with pytest.raises(ValueError, match="'infinity'.*infinite_input"):
        check_tags(["infinite_input", "infinity"])
