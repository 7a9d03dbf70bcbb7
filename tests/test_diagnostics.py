"""The ratio, TRPO's surrogate and the diagnostics that PPO and TRPO log (objectives.py), and the exact
policy KL of algos/common.py, against hand formulas, loops, autograd and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from rlnotes.algos.common import freeze_distribution, policy_kl
from rlnotes.objectives import (
    clip_active,
    clip_fraction,
    clipped_surrogate,
    explained_variance,
    pg_loss,
    probability_ratio,
    surrogate_loss,
)

F64 = torch.float64


def t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


RATIOS = [0.5, 0.79, 0.81, 1.0, 1.19, 1.21, 2.0]


def logps(ratios):
    old = t([-1.0 - 0.1 * i for i in range(len(ratios))])
    return old + t([math.log(r) for r in ratios]), old


def test_probability_ratio_and_surrogate_by_hand():
    logp, old = logps(RATIOS)
    torch.testing.assert_close(probability_ratio(logp, old), t(RATIOS))
    adv = t([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, -0.5])
    torch.testing.assert_close(surrogate_loss(logp, old, adv), -t(RATIOS) * adv)
    with pytest.raises(ValueError, match=r"surrogate_loss: logp \(3,\) and old_logp \(2,\) differ in shape"):
        surrogate_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_surrogate_gradient_at_the_old_policy_is_the_policy_gradient():
    # grad r = r grad log pi, and r = 1 at theta_old: the surrogate's gradient there is pg_loss's
    theta = t([0.3, -0.2, 0.5], grad=True)
    actions = torch.tensor([0, 2, 1, 2])
    adv = t([1.0, -0.5, 2.0, 0.3])
    logp = torch.log_softmax(theta, -1)[actions]
    (g_surrogate,) = torch.autograd.grad(surrogate_loss(logp, logp.detach(), adv).mean(), theta, retain_graph=True)
    (g_pg,) = torch.autograd.grad(pg_loss(logp, adv), theta)
    torch.testing.assert_close(g_surrogate, g_pg)


def test_clip_fraction_counts_ratios_outside_the_range():
    logp, old = logps(RATIOS)
    assert clip_fraction(logp, old, eps=0.2).item() == pytest.approx(4 / 7)  # 0.5, 0.79, 1.21, 2.0
    assert clip_fraction(logp, old, eps=0.2, eps_high=0.5).item() == pytest.approx(3 / 7)  # 0.5, 0.79, 2.0
    assert clip_fraction(logp, old, eps=0.6).item() == pytest.approx(1 / 7)  # only 2.0
    with pytest.raises(ValueError, match="clip_fraction: eps must be > 0"):
        clip_fraction(logp, old, eps=0.0)


def test_clip_active_is_exactly_where_the_clipped_surrogate_has_no_gradient():
    ratios = RATIOS * 2
    adv = t([1.5] * len(RATIOS) + [-0.7] * len(RATIOS))
    logp, old = logps(ratios)
    logp = logp.detach().requires_grad_()
    for eps, eps_high in [(0.2, None), (0.2, 0.5), (0.1, 0.3)]:
        mask = clip_active(logp, old, adv, eps, eps_high)
        (g,) = torch.autograd.grad(clipped_surrogate(logp, old, adv, eps, eps_high).sum(), logp)
        torch.testing.assert_close(mask, g == 0)
    mask = clip_active(logp, old, adv, 0.2)
    assert mask.tolist() == [False, False, False, False, False, True, True] + [True, True, False, False, False, False, False]


def test_explained_variance_by_hand():
    returns = t([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns).item() == pytest.approx(0.0)
    values = t([1.5, 1.5, 3.5, 3.5])  # errors -0.5, 0.5, -0.5, 0.5: var 1/3; var(returns) 5/3
    assert explained_variance(values, returns).item() == pytest.approx(1 - (1 / 3) / (5 / 3))
    assert explained_variance(-returns, returns).item() < 0  # worse than predicting the mean
    assert math.isnan(explained_variance(returns, torch.ones(4, dtype=F64)).item())  # undefined, as in SB3
    with pytest.raises(ValueError, match=r"explained_variance: values \(4, 1\) and returns \(4,\) differ in shape"):
        explained_variance(returns[:, None], returns)


def test_policy_kl_matches_torch_for_both_policy_kinds():
    g = torch.Generator().manual_seed(0)
    p, q = Categorical(logits=torch.randn(5, 3, generator=g)), Categorical(logits=torch.randn(5, 3, generator=g))
    torch.testing.assert_close(policy_kl(p, q), kl_divergence(p, q))
    mean_p, mean_q = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    std_p, std_q = torch.rand(5, 2, generator=g) + 0.2, torch.rand(5, 2, generator=g) + 0.2
    p, q = Independent(Normal(mean_p, std_p), 1), Independent(Normal(mean_q, std_q), 1)
    torch.testing.assert_close(policy_kl(p, q), kl_divergence(p, q))
    with pytest.raises(ValueError, match="policy_kl"):
        policy_kl(Categorical(logits=torch.zeros(5, 2)), q)


def test_freeze_distribution_detaches_and_selects_rows():
    logits = torch.randn(6, 3, requires_grad=True)
    frozen = freeze_distribution(Categorical(logits=logits), torch.tensor([4, 1]))
    assert not frozen.logits.requires_grad
    torch.testing.assert_close(frozen.probs, torch.softmax(logits.detach()[[4, 1]], -1))
    mean, std = torch.randn(6, 2, requires_grad=True), torch.ones(6, 2)
    frozen = freeze_distribution(Independent(Normal(mean, std), 1), slice(0, 3))
    assert frozen.base_dist.loc.shape == (3, 2) and not frozen.base_dist.loc.requires_grad
    with pytest.raises(ValueError, match="freeze_distribution"):
        freeze_distribution(Normal(torch.zeros(2), torch.ones(2)))
