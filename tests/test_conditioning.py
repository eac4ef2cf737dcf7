"""The componentwise condition numbers behind the grading, against closed forms, and their store."""

import numpy as np
import pytest

from lossoracle import condcache, specs
from lossoracle.conditioning import gradient_conditioning, scale_bound, value_conditioning
from lossoracle.engine import case_conditioning, exact_outputs
from lossoracle.frameworks import cotangent
from lossoracle.spec import Case


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_bce_with_logits_value_condition_matches_the_closed_form():
    """ℓ = y·softplus(−x) + (1 − y)·softplus(x): ∂ℓ/∂x = σ(x) − y, ∂ℓ/∂y = −x, so
    c = |ℓ| + |x|·|σ(x) − y| + |y|·|x| — without the last term for a hard label y = 1 (exact, not
    perturbed); the tail scale is max(1, |x|, |y|)."""
    spec = specs.get("binary_cross_entropy_with_logits")
    x, y = np.array([-3.0, 0.5, 20.0, 2.0]), np.array([0.25, 1.0, 1.0, 0.0])
    params = {"weight": None, "pos_weight": None, "reduction": "none"}
    value = spec.oracle(input=x, target=y, **params)
    got = value_conditioning(spec.oracle, {"input": x, "target": y}, params, value, spec.hard_label_args)
    f = np.array([float(v) for v in value])
    want = np.abs(f) + np.abs(x) * np.abs(_sigmoid(x) - y) + np.abs(y) * np.abs(x) * (y != 1)
    assert np.allclose(got.cond["value"], want, rtol=1e-12)
    soft = value_conditioning(spec.oracle, {"input": x, "target": y}, params, value)  # every entry perturbed
    assert np.allclose(soft.cond["value"], want + np.abs(x) * (y == 1), rtol=1e-12)
    assert np.array_equal(got.scale["value"], np.maximum(1.0, np.maximum(np.where(x != 0, np.abs(x), 0), y)))


def test_gradient_condition_counts_the_cotangent_exactly():
    """v = g·(σ(x) − y): the cotangent's term is |g|·|σ(x) − y|, the target's |y|·|g|, the
    logit's |x|·|g|·σ'(x)."""
    spec = specs.get("binary_cross_entropy_with_logits")
    x, y = np.array([1.5, -0.25]), np.array([0.5, 0.0])
    params = {"weight": None, "pos_weight": None, "reduction": "none"}
    g = np.array([2.0, -0.5])
    grads = spec.gradient(g, input=x, target=y, **params)
    got = gradient_conditioning(spec.gradient, {"input": x, "target": y}, params, grads, g).cond["grad:input"]
    s = _sigmoid(x)
    want = 2 * np.abs(g * (s - y)) + np.abs(y * g) + np.abs(x * g * s * (1 - s))
    assert np.allclose(got, want, rtol=1e-12)


def test_a_kink_counts_its_larger_one_sided_slope_and_the_domain_edge_one_side():
    """BCE on probabilities at p = 1 (y = 1): only p(1 − h) is admissible; the loss −log p has
    slope −1/p there, so the term is |p|·1 = 1 and c = 0 + 1 + |y|·|log p| = 1."""
    spec = specs.get("binary_cross_entropy")
    p, y = np.array([1.0]), np.array([1.0])
    params = {"weight": None, "reduction": "none"}
    value = spec.oracle(input=p, target=y, **params)
    got = value_conditioning(spec.oracle, {"input": p, "target": y}, params, value).cond["value"]
    assert float(value[0]) == 0 and got[0] == pytest.approx(1.0, rel=1e-12)


def test_exact_zero_of_a_minimum_has_zero_condition():
    """KL(p‖p) with normalised rows is a minimum: the first-order terms vanish, c ≈ 0, so any
    non-zero float result is beyond the stable bound (scipy's 2.4e-8 for an exact 0)."""
    spec = specs.get("kl_divergence")
    case = next(c for c in spec.cases() if c.id == "same_distribution")
    conv = {"normalize": True}
    c = case_conditioning(spec, case, conv, "value").cond["value"]
    value, _ = exact_outputs(spec, case, conv)
    assert np.all(np.asarray(value, dtype=object) == 0) and np.all(c < 1e-20)


def test_scale_bound_is_an_upper_bound_of_the_tail_scale():
    spec = specs.get("sigmoid_focal_loss")
    case = next(c for c in spec.cases() if c.raises is None and np.size(c.inputs["inputs"]) > 3)
    params = {**spec.params, **case.params}
    value, grads = exact_outputs(spec, case)
    bound = scale_bound(case.inputs, params)
    assert np.all(value_conditioning(spec.oracle, case.inputs, params, value).scale["value"] <= bound)
    gb = scale_bound(case.inputs, params, cotangent(np.shape(value)))
    g = gradient_conditioning(spec.gradient, case.inputs, params, grads, cotangent(np.shape(value)))
    assert all(np.all(s <= gb) for s in g.scale.values())


def test_the_store_key_follows_every_input_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSORACLE_CACHE", str(tmp_path))
    spec = specs.get("softmax")
    case = next(c for c in spec.cases() if c.raises is None)
    cot = cotangent((2, 2))
    k = condcache.key(spec, case, {}, "value", cot)
    other = Case(case.id, {"input": case.inputs["input"] + 0.5}, case.params)
    assert k != condcache.key(spec, other, {}, "value", cot) != condcache.key(spec, case, {"x": 1}, "value", cot)
    assert k != condcache.key(spec, case, {}, "grad", cot)
    result = case_conditioning(spec, other, {}, "value")
    condcache._LOADED.clear()
    stored = condcache.get(spec.name, condcache.key(spec, other, {}, "value", cotangent(np.shape(
        exact_outputs(spec, other)[0]))), {"value": np.shape(result.cond["value"])})
    assert stored is not None and np.array_equal(stored.cond["value"], result.cond["value"])
    assert (tmp_path / "conditioning" / "softmax.jsonl").exists()
