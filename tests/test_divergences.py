"""rlnotes.divergences against enumeration, torch.distributions, Monte Carlo and the PPO paper's rule."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from rlnotes.divergences import AdaptiveKL, kl_categorical, kl_estimate, kl_gaussian

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- kl_categorical


def test_kl_categorical_against_enumeration_and_torch():
    g = gen(0)
    logits_p = 2.0 * torch.randn(4, 6, generator=g, dtype=F64)
    logits_q = 2.0 * torch.randn(4, 6, generator=g, dtype=F64)
    got = kl_categorical(logits_p, logits_q)
    assert got.shape == (4,)
    # enumeration in numpy float64: sum_x p(x) log(p(x) / q(x))
    lp, lq = logits_p.numpy(), logits_q.numpy()
    p = np.exp(lp) / np.exp(lp).sum(-1, keepdims=True)
    q = np.exp(lq) / np.exp(lq).sum(-1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), (p * np.log(p / q)).sum(-1), rtol=1e-12)
    torch.testing.assert_close(got, kl_divergence(Categorical(logits=logits_p), Categorical(logits=logits_q)))
    # KL(p || p) = 0, and KL is not symmetric
    torch.testing.assert_close(kl_categorical(logits_p, logits_p), torch.zeros(4, dtype=F64))
    assert not torch.allclose(got, kl_categorical(logits_q, logits_p))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_kl_categorical_finite_at_extreme_logits(dtype):
    # p puts all its mass on x=0 (log p(0) = 0); there log q(0) = -1e4 - logsumexp(q) = -2e4: KL = 2e4
    p = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    q = torch.tensor([-1e4, 1e4, 0.0], dtype=dtype)
    kl = kl_categorical(p, q)
    assert torch.isfinite(kl)
    assert kl.item() == pytest.approx(2e4, rel=1e-6)
    logits = torch.tensor([[1e4, 0.0, -1e4], [-1e4, -1e4, 1e4], [0.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    out = kl_categorical(logits, logits.flip(0))
    (g,) = torch.autograd.grad(out.sum(), logits)
    assert torch.isfinite(out).all() and torch.isfinite(g).all() and (out >= 0).all()


# ---------------------------------------------------------------- kl_gaussian

MEAN_P, STD_P = [0.3, -1.0], [0.8, 1.5]
MEAN_Q, STD_Q = [0.0, -0.5], [1.1, 1.2]


def test_kl_gaussian_against_torch_distributions():
    mp, sp, mq, sq = (torch.tensor(x, dtype=F64) for x in (MEAN_P, STD_P, MEAN_Q, STD_Q))
    expected = kl_divergence(Independent(Normal(mp, sp), 1), Independent(Normal(mq, sq), 1))
    torch.testing.assert_close(kl_gaussian(mp, sp, mq, sq), expected)
    # batched: (B, D) with a shared q broadcast over B
    mp_b = torch.stack([mp, mp + 1.0])
    out = kl_gaussian(mp_b, sp, mq, sq)
    assert out.shape == (2,)
    torch.testing.assert_close(out[0], expected)


def test_kl_gaussian_against_monte_carlo():
    n = 1_000_000
    p = Normal(torch.tensor(MEAN_P, dtype=F64), torch.tensor(STD_P, dtype=F64))
    q = Normal(torch.tensor(MEAN_Q, dtype=F64), torch.tensor(STD_Q, dtype=F64))
    x = p.loc + p.scale * torch.randn(n, 2, generator=gen(1), dtype=F64)  # (n, D) samples of p
    log_ratio = (p.log_prob(x) - q.log_prob(x)).sum(-1)  # (n,)
    exact = kl_gaussian(p.loc, p.scale, q.loc, q.scale).item()
    standard_error = log_ratio.std().item() / math.sqrt(n)
    assert abs(log_ratio.mean().item() - exact) < 4 * standard_error


def test_kl_gaussian_rejects_non_positive_std():
    z, one = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="kl_gaussian: std_p must be > 0"):
        kl_gaussian(z, torch.tensor([1.0, 0.0]), z, one)
    with pytest.raises(ValueError, match="kl_gaussian: std_q must be > 0"):
        kl_gaussian(z, one, z, -one)
    with pytest.raises(ValueError, match="kl_gaussian: shapes do not broadcast"):
        kl_gaussian(torch.zeros(3), one, z, one)


# ---------------------------------------------------------------- kl_estimate


def test_kl_estimators_by_hand():
    # p(x) = 0.5, q(x) = 0.25: log r = -log 2
    logp, logq = torch.tensor([math.log(0.5)], dtype=F64), torch.tensor([math.log(0.25)], dtype=F64)
    assert kl_estimate(logp, logq, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, logq, "k2").item() == pytest.approx(math.log(2) ** 2 / 2)
    assert kl_estimate(logp, logq, "k3").item() == pytest.approx((0.5 - 1) + math.log(2))
    assert kl_estimate(logp, logq).item() == kl_estimate(logp, logq, "k3").item()  # k3 is the default


def sample_log_probs(logits_p, logits_q, n, seed):
    """n samples x ~ p; returns log p(x), log q(x) and the exact per-category log-probs."""
    logp_all, logq_all = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    x = torch.multinomial(logp_all.exp(), n, replacement=True, generator=gen(seed))
    return logp_all[x], logq_all[x], logp_all, logq_all


FAR_P = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5], dtype=F64)
FAR_Q = torch.tensor([0.0, 1.0, 0.5, -1.0, 0.0], dtype=F64)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_k1_and_k3_are_unbiased(kind):
    n = 1_000_000
    logp, logq, _, _ = sample_log_probs(FAR_P, FAR_Q, n, seed=2)
    est = kl_estimate(logp, logq, kind)
    exact = kl_categorical(FAR_P, FAR_Q).item()
    standard_error = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - exact) < 4 * standard_error
    if kind == "k1":
        assert (est < 0).any()  # unbiased but not a per-sample distance
    else:
        assert (est >= 0).all()


def test_k2_is_biased_but_close_for_near_distributions():
    # expectations under p by enumeration (no sampling noise): E_p[k2] = sum p (log q - log p)^2 / 2
    def e_k2(lp, lq):
        logp, logq = torch.log_softmax(lp, -1), torch.log_softmax(lq, -1)
        return (logp.exp() * 0.5 * (logq - logp) ** 2).sum().item()

    far_kl = kl_categorical(FAR_P, FAR_Q).item()
    assert abs(e_k2(FAR_P, FAR_Q) - far_kl) > 0.1 * far_kl  # far apart: clearly biased
    near_q = FAR_P + 0.05 * torch.tensor([1.0, -1.0, 0.5, 0.0, -0.5], dtype=F64)
    near_kl = kl_categorical(FAR_P, near_q).item()
    assert abs(e_k2(FAR_P, near_q) - near_kl) < 0.05 * near_kl  # close: bias is third order
    # and the Monte Carlo mean of k2 matches its own expectation, not the KL
    n = 1_000_000
    logp, logq, _, _ = sample_log_probs(FAR_P, FAR_Q, n, seed=3)
    est = kl_estimate(logp, logq, "k2")
    assert abs(est.mean().item() - e_k2(FAR_P, FAR_Q)) < 4 * est.std().item() / math.sqrt(n)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_k3_never_negative_and_never_nan(dtype):
    g = gen(4)
    parts = [scale * torch.randn(20_000, generator=g, dtype=F64) for scale in (1e-12, 1e-7, 1e-3, 1.0, 30.0)]
    extremes = torch.tensor([1e4, -1e4, 0.0, 1e-30, -1e-30, 700.0, -700.0], dtype=F64)
    log_r = torch.cat(parts + [extremes]).to(dtype)
    # logp = 0 makes logq - logp exactly log_r (tiny log-ratios survive); then realistic log-probs
    logp = torch.cat([torch.zeros_like(log_r), torch.randn(log_r.shape, generator=g, dtype=F64).to(dtype) - 5.0])
    logq = logp + log_r.repeat(2)
    for kind in ("k1", "k2", "k3"):
        assert not torch.isnan(kl_estimate(logp, logq, kind)).any(), kind
    k3 = kl_estimate(logp, logq, "k3")
    assert (k3 >= 0).all()
    # documented: a huge positive log r (q >> p at x) gives +inf, never NaN; a huge negative one stays finite
    big = torch.tensor([1e4, -1e4], dtype=dtype)
    out = kl_estimate(torch.zeros(2, dtype=dtype), big, "k3")
    assert math.isinf(out[0].item()) and out[0].item() > 0
    assert out[1].item() == pytest.approx(1e4 - 1.0)


def test_kl_estimate_finite_at_extreme_logprobs():
    # log r = logq - logp <= 0 here (+1e4 is the documented inf of k3, tested above)
    logp = torch.tensor([-1e4, -1.0, 0.0, -1e4 + 1.0], dtype=F64)
    logq = torch.tensor([-1e4, -1e4, -1e4, -1e4], dtype=F64)
    for kind in ("k1", "k2", "k3"):
        assert torch.isfinite(kl_estimate(logp, logq, kind)).all(), kind


def test_kl_estimate_errors():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="kl_estimate: kind must be one of 'k1', 'k2', 'k3', got 'k4'"):
        kl_estimate(z, z, "k4")
    with pytest.raises(ValueError, match=r"kl_estimate: logp \(3,\) and logq \(2,\) differ in shape"):
        kl_estimate(z, torch.zeros(2))


# ---------------------------------------------------------------- numerical safety
# Inputs from bug reports (TRL, verl, OpenRLHF): masked (-inf) categories and log-probs must not give NaN.

NAN, INF = float("nan"), float("inf")


def test_kl_categorical_zero_probability_category_adds_zero():
    # p = (1/2, 1/2, 0), q uniform: 0 * (-inf - log q) was NaN; the KL is log(1.5)
    kl = kl_categorical(torch.tensor([0.0, 0.0, -INF]), torch.zeros(3))
    assert kl.item() == pytest.approx(math.log(1.5), rel=1e-6)
    # q = 0 where p has mass: +inf, the true value
    assert kl_categorical(torch.zeros(3), torch.tensor([0.0, 0.0, -INF])).item() == INF


def test_kl_categorical_with_masked_categories_against_torch():
    g = gen(7)
    logits_p = 2.0 * torch.randn(200, 6, generator=g, dtype=F64)
    logits_q = 2.0 * torch.randn(200, 6, generator=g, dtype=F64)
    masked_p = torch.rand(200, 6, generator=g) < 0.3
    masked_p[:, 0] = False  # p keeps at least one category
    logits_p[masked_p] = -INF
    both = masked_p & (torch.rand(200, 6, generator=g) < 0.5)  # q masked too, only where p is
    logits_q[both] = -INF
    logits_p.requires_grad_(True)
    got = kl_categorical(logits_p, logits_q)
    expected = kl_divergence(Categorical(logits=logits_p.detach()), Categorical(logits=logits_q))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)
    (grad,) = torch.autograd.grad(got.sum(), logits_p)
    assert torch.isfinite(grad).all() and (grad[masked_p] == 0).all()
    # q masked on category 0, where every p has mass: +inf, as torch says
    logits_q0 = torch.where(torch.arange(6) == 0, -INF, logits_q)
    got = kl_categorical(logits_p.detach(), logits_q0)
    expected = kl_divergence(Categorical(logits=logits_p.detach()), Categorical(logits=logits_q0))
    assert (got == INF).all() and (expected == INF).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_kl_gaussian_nearly_equal_stds_is_never_negative(dtype):
    # float32, stds 3 and 3 * (1 + 1e-4): the old sum of O(1) terms gave -6e-8
    mean = torch.zeros(1, dtype=dtype)
    for d in (1e-2, 1e-3, 1e-4, 1e-5, 1e-7):
        sp = torch.full((1,), 3.0, dtype=dtype)
        sq = sp * (1 + d)
        got = kl_gaussian(mean, sp, mean, sq).item()
        exact = kl_divergence(Normal(mean.double(), sp.double()), Normal(mean.double(), sq.double())).item()
        assert got >= 0.0
        assert got == pytest.approx(exact, rel=1e-2, abs=1e-12 if dtype == F64 else 1e-9)
    one = torch.ones(3, dtype=dtype)
    assert kl_gaussian(one, 0.35 * one, one, 0.35 * one).item() == 0.0  # equal inputs: exactly 0
    # very unequal widths stay finite and right: 0.5 * (1e-40 - 1 - 2 log 1e-20)
    tiny = kl_gaussian(mean, torch.full((1,), 1e-20, dtype=dtype), mean, torch.ones(1, dtype=dtype))
    assert tiny.item() == pytest.approx(0.5 * (-1.0 + 40 * math.log(10.0)), rel=1e-5)


def test_kl_estimate_masked_minus_inf_entries():
    logp = torch.tensor([-INF, -INF, -1.0, -1.0, -0.5], dtype=F64, requires_grad=True)
    logq = torch.tensor([-INF, -1.0, -INF, -1.0, -0.7], dtype=F64, requires_grad=True)
    for kind in ("k1", "k2", "k3"):
        out = kl_estimate(logp, logq, kind)
        assert out[0].item() == 0.0, kind  # impossible under both: log r = 0, not -inf + inf = NaN
        assert out[3].item() == 0.0, kind
        assert not torch.isnan(out).any(), kind
        # mask the infinite entries away afterwards: no NaN comes back through the gradient
        kept = torch.tensor([True, False, False, True, True])
        grads = torch.autograd.grad(torch.where(kept, out, 0.0).sum(), (logp, logq))
        assert all(torch.isfinite(g).all() for g in grads), kind
    k1, k2, k3 = (kl_estimate(logp, logq, kind).detach() for kind in ("k1", "k2", "k3"))
    assert k1[1].item() == -INF and k1[2].item() == INF  # -log r, as the formula says
    assert k2[1].item() == INF and k2[2].item() == INF
    assert k3[1].item() == INF and k3[2].item() == INF  # was expm1(inf) - inf = NaN at [1]
    # the gradient at equal finite log-probs (the first step from the reference) is unchanged
    x = torch.tensor([-1.0], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(kl_estimate(x, x.detach(), "k1").sum(), x)
    assert g.item() == 1.0


# ---------------------------------------------------------------- AdaptiveKL


def test_adaptive_kl_follows_the_ppo_rule():
    # PPO paper (Schulman et al. 2017), sec. 4: d < d_targ/1.5 -> beta/2 ; d > d_targ*1.5 -> beta*2
    # d_targ = 0.01: thresholds 0.015 and 0.00667
    ctrl = AdaptiveKL(target=0.01, init_beta=1.0)
    observed = [0.02, 0.016, 0.01, 0.007, 0.005, 0.001, 0.0001, 0.03]
    trace = [ctrl.update(d) for d in observed]
    assert trace == [2.0, 4.0, 4.0, 4.0, 2.0, 1.0, 0.5, 1.0]
    assert ctrl.beta == 1.0
    assert ctrl.update(torch.tensor(0.05)) == 2.0  # a 0-d tensor works too


def test_adaptive_kl_boundaries_do_nothing():
    ctrl = AdaptiveKL(target=0.01, init_beta=0.5)
    assert ctrl.update(1.5 * 0.01) == 0.5  # exactly d_targ * 1.5: no change (strict >)
    assert ctrl.update(0.01 / 1.5) == 0.5  # exactly d_targ / 1.5: no change (strict <)
    assert ctrl.update(1.5 * 0.01 * (1 + 1e-12)) == 1.0
    assert ctrl.update(0.01 / 1.5 * (1 - 1e-12)) == 0.5


def test_adaptive_kl_errors():
    with pytest.raises(ValueError, match="AdaptiveKL: target must be > 0"):
        AdaptiveKL(target=0.0)
    with pytest.raises(ValueError, match="AdaptiveKL: init_beta must be > 0"):
        AdaptiveKL(target=0.01, init_beta=-1.0)
    with pytest.raises(ValueError, match="AdaptiveKL.update: observed_kl must be a finite number"):
        AdaptiveKL(target=0.01).update(float("nan"))
