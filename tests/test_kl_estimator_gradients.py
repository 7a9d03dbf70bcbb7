"""Which KL does each per-token KL estimator's GRADIENT follow? Exact answers by enumeration (07_grpo).

GRPO (``rlnotes.lm.grpo``) adds ``beta * k(y)`` to the loss of every sampled token y, with
``k = kl_estimate(log pi_theta(y), log pi_ref(y), kind)``. The token is data: the loss is differentiated
through log pi_theta(y) with y held fixed (no score-function term). What the optimiser follows is then

    E_{y ~ pi_s}[ grad_theta k(y) ] = sum_y pi_s(y) grad_theta k(y),

where pi_s is the policy that SAMPLED y: pi_theta itself on the first inner step (on-policy), pi_old
from the second inner step on. On a categorical this sum is computed exactly over the whole support,
and compared with the gradients of the two exact KLs, KL(pi_theta || pi_ref) and KL(pi_ref || pi_theta)
(``divergences.kl_categorical``, through autograd). Results (all exact, float64):

* on-policy: k1's expected gradient is 0; k2's is grad KL(pi_theta || pi_ref); k3's is
  grad KL(pi_ref || pi_theta), although k3's VALUE is unbiased for KL(pi_theta || pi_ref);
* off-policy (samples of pi_old != pi_theta): k3's value is biased for KL(pi_theta || pi_ref) and its
  expected gradient is neither KL's gradient; weighted by the ratio pi_theta / pi_old, differentiable
  (TRL 1.16's GRPOConfig.use_bias_correction_kl=True), k3 and k1 both give exactly KL(pi_theta || pi_ref)
  and its gradient; with the ratio detached, k3 gives grad KL(pi_ref || pi_theta) again;
* near pi_ref the two KL gradients agree to first order (their difference shrinks like the square of
  the distance), which is why the difference only shows once the policy has moved;
* ``grpo.grpo_loss``'s KL term is this k3 with the sample held fixed: its derivative with respect to a
  token's log-prob is beta * (1 - pi_ref / pi_theta), the factor every expectation above is built from.
"""

from __future__ import annotations

import pytest
import torch

from rlnotes.divergences import kl_categorical, kl_estimate
from rlnotes.lm import grpo
from rlnotes.lm.rollout import Rollout

F64 = torch.float64
CASES = [(seed, V) for seed in range(4) for V in (2, 5, 40)]


def _case(seed: int, V: int):
    """theta (V,) logits of pi_theta (a leaf with grad), old (V,) logits of a pi_old near it, logq = log pi_ref."""
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(V, generator=g, dtype=F64)
    theta = (ref_logits + 1.5 * torch.randn(V, generator=g, dtype=F64)).requires_grad_()  # moved away from pi_ref
    old = theta.detach() + 0.5 * torch.randn(V, generator=g, dtype=F64)  # the sampler before the last inner step
    return theta, old, ref_logits.log_softmax(-1)


def _grad(f, theta):
    (g,) = torch.autograd.grad(f(theta), theta)
    return g


def _kl_gradients(theta, logq):
    """(grad KL(pi_theta || pi_ref), grad KL(pi_ref || pi_theta)), exact."""
    return _grad(lambda th: kl_categorical(th, logq), theta), _grad(lambda th: kl_categorical(logq, th), theta)


def _expected(kind, theta, logq, sampler_logits=None, ratio=None, gradient=True):
    """E_{y ~ pi_s}[k(y)] or its gradient with y held fixed, summed exactly over the support.

    pi_s = softmax(sampler_logits), detached (the sampler's probabilities are data); None: pi_theta itself,
    detached (on-policy). ratio: None, "differentiable" (pi_theta / pi_s with gradient, TRL's bias
    correction) or "detached" (the same weight as a constant).
    """
    log_s = (theta if sampler_logits is None else sampler_logits).detach().log_softmax(-1)

    def f(th):
        logp = th.log_softmax(-1)
        k = kl_estimate(logp, logq, kind)
        if ratio == "differentiable":
            k = (logp - log_s).exp() * k
        elif ratio == "detached":
            k = (logp - log_s).exp().detach() * k
        return (log_s.exp() * k).sum()

    return _grad(f, theta) if gradient else f(theta).detach()


def _far(a, b, scale):
    return float((a - b).norm()) > 1e-3 * float(scale.norm())


@pytest.mark.parametrize("seed,V", CASES)
def test_on_policy_k1_k2_k3_gradients(seed, V):
    theta, _, logq = _case(seed, V)
    to_ref, from_ref = _kl_gradients(theta, logq)  # grad KL(pi || pi_ref), grad KL(pi_ref || pi)
    k1, k2, k3 = (_expected(kind, theta, logq) for kind in ("k1", "k2", "k3"))
    assert torch.allclose(k1, torch.zeros(V, dtype=F64), atol=1e-15)  # E[grad log pi] = 0: k1 pulls nowhere on average
    assert torch.allclose(k2, to_ref, rtol=1e-10, atol=1e-14)  # k2 follows KL(pi || pi_ref)
    assert torch.allclose(k3, from_ref, rtol=1e-10, atol=1e-14)  # k3 follows KL(pi_ref || pi) ...
    assert _far(k3, to_ref, to_ref)  # ... and not KL(pi || pi_ref), the KL its value estimates
    # the identity behind k3's: E_pi[(1 - pi_ref / pi) grad log pi] = sum (pi - pi_ref) grad log pi
    pi, ref = theta.detach().softmax(-1), logq.exp()
    jacobian = torch.autograd.functional.jacobian(lambda th: th.log_softmax(-1), theta.detach())  # (V, V): d log pi_y / d theta
    assert torch.allclose(k3, (pi - ref) @ jacobian, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed,V", CASES)
def test_values_unbiased_only_under_the_policy_that_sampled(seed, V):
    theta, old, logq = _case(seed, V)
    kl = float(kl_categorical(theta.detach(), logq))  # KL(pi_theta || pi_ref)
    for kind in ("k1", "k3"):  # on-policy both are unbiased
        assert float(_expected(kind, theta, logq, gradient=False)) == pytest.approx(kl, rel=1e-12, abs=1e-15)
    if V > 2 or seed:  # k2 is biased (exact only to second order near pi_ref)
        assert abs(float(_expected("k2", theta, logq, gradient=False)) - kl) > 1e-6
    # from the second inner step the tokens come from pi_old: k3 of pi_theta's log-probs is then biased ...
    off = float(_expected("k3", theta, logq, old, gradient=False))
    assert abs(off - kl) > 1e-6
    # ... it is unbiased for the SAMPLER's KL (log-probs of pi_old), and the ratio-weighted k3 for pi_theta's
    old_leaf = old.clone().requires_grad_()
    assert float(_expected("k3", old_leaf, logq, gradient=False)) == pytest.approx(float(kl_categorical(old, logq)), rel=1e-12)
    assert float(_expected("k3", theta, logq, old, "differentiable", gradient=False)) == pytest.approx(kl, rel=1e-12)


@pytest.mark.parametrize("seed,V", CASES)
def test_off_policy_gradients(seed, V):
    theta, old, logq = _case(seed, V)
    to_ref, from_ref = _kl_gradients(theta, logq)
    plain = _expected("k3", theta, logq, old)  # GRPO's k3 term on pi_old's tokens (grpo_loss, inner step >= 2)
    if V > 2:  # with 2 categories every gradient lies on one line; the two KLs can only differ in length
        assert _far(plain, from_ref, from_ref) and _far(plain, to_ref, to_ref)  # neither KL's gradient
    # weighted by the differentiable ratio pi_theta / pi_old (TRL's use_bias_correction_kl=True): KL(pi || pi_ref)
    assert torch.allclose(_expected("k3", theta, logq, old, "differentiable"), to_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(_expected("k1", theta, logq, old, "differentiable"), to_ref, rtol=1e-10, atol=1e-14)
    # the same weight, detached, only undoes the sampling: back to the on-policy k3, KL(pi_ref || pi)
    assert torch.allclose(_expected("k3", theta, logq, old, "detached"), from_ref, rtol=1e-10, atol=1e-14)


def test_the_two_kl_gradients_differ_at_second_order_near_the_reference():
    g = torch.Generator().manual_seed(7)
    ref_logits, direction = torch.randn(6, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    logq = ref_logits.log_softmax(-1)
    relative = []
    for t in (1e-1, 1e-2, 1e-3):
        theta = (ref_logits + t * direction).requires_grad_()
        to_ref, from_ref = _kl_gradients(theta, logq)
        relative.append(float((to_ref - from_ref).norm() / to_ref.norm()))
    # each gradient is O(t), their difference O(t^2): the relative difference shrinks like t
    assert relative[1] < relative[0] / 5 and relative[2] < relative[1] / 5, relative
    assert relative[2] < 1e-2


def test_grpo_loss_kl_term_is_k3_with_the_token_held_fixed():
    """d(beta k3)/d log pi(y) = beta (1 - pi_ref(y) / pi(y)), through grpo_loss itself (advantages 0, dapo mean)."""
    g = torch.Generator().manual_seed(3)
    M, L = 4, 5
    completion_mask = torch.ones(M, L, dtype=torch.bool)
    completion_mask[:, :2] = False  # a 2-token prompt
    completion_mask[1, 4] = False  # one shorter answer
    mask = completion_mask[:, 1:]
    ref_logp = torch.where(mask, -torch.rand(M, L - 1, generator=g, dtype=F64) * 3, 0.0)
    logp = torch.where(mask, -torch.rand(M, L - 1, generator=g, dtype=F64) * 3, 0.0).requires_grad_()
    rollout = Rollout(pairs=torch.zeros(M, 2, dtype=torch.long), completions=torch.zeros(M, 3, dtype=torch.long),
                      tokens=torch.zeros(M, L, dtype=torch.long), completion_mask=completion_mask,
                      rewards=torch.zeros(M, dtype=F64), old_logp=logp.detach().clone(), ref_logp=ref_logp, group_size=2)
    beta = 0.3
    config = grpo.Config(beta=beta, aggregation="dapo")
    advantages = grpo.advantages_of(rollout)
    assert torch.equal(advantages, torch.zeros(M, dtype=F64))  # equal rewards: only the KL term has a gradient
    loss, logs = grpo.grpo_loss(logp, rollout, advantages, config)
    (grad,) = torch.autograd.grad(loss, logp)
    expected = beta * (1 - (ref_logp - logp.detach()).exp()) / mask.sum()
    assert torch.allclose(grad[mask], expected[mask], rtol=1e-12)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert logs["kl"] == pytest.approx(float(kl_estimate(logp.detach(), ref_logp, "k3")[mask].mean()), rel=1e-12)


def test_the_grpo_docstrings_name_the_kl_the_gradient_follows():
    for doc in (grpo.__doc__, grpo.grpo_loss.__doc__):
        assert "KL(pi_ref || pi)" in doc
    assert "pi_old" in grpo.__doc__ and "tests/test_kl_estimator_gradients.py" in grpo.__doc__
