"""Chapter 02's exact problems (rlnotes.exact.policy_gradient): the exact policy gradient against its estimates.

Statistical checks use fixed seeds and bounds of 4.5 standard errors per coordinate: for a correct
estimator each such check would fail with probability below 1e-5 per coordinate under a normal
approximation (M >= 2000 independent estimates), so a failure means a bias, not bad luck.
"""

import dataclasses

import pytest
import torch

from rlnotes.advantages import discounted_returns
from rlnotes.algos.tabular import policy_evaluation
from rlnotes.envs import gridworld
from rlnotes.exact import policy_gradient as pg

torch.set_num_threads(1)
F64 = torch.float64
Z = 4.5


def _bandit(seed=0, A=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(A, generator=g, dtype=F64), torch.randn(A, generator=g, dtype=F64) + 2.0


def _sample_bandit(logits, q, M, B, seed, baseline=0.0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.multinomial(torch.softmax(logits, -1).expand(M, -1), B, replacement=True, generator=g)  # (M, B)
    return pg.estimate_gradients(pg.bandit_surrogate, logits, actions, q[actions] - baseline)  # (M, A)


def _agrees(estimates, exact):
    se = estimates.std(0) / estimates.shape[0] ** 0.5
    return ((estimates.mean(0) - exact).abs() <= Z * se + 1e-12).all()


def test_sum_over_actions_matches_the_softmax_closed_form_and_autograd():
    logits, q = _bandit()
    exact = pg.sum_over_actions_gradient(logits, q)
    pi = torch.softmax(logits, -1)
    torch.testing.assert_close(exact, pi * (q - (pi * q).sum()))  # dpi(a)/dlogit_b = pi(a)(1[a=b] - pi(b))
    theta = logits.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad((torch.softmax(theta, -1) * q).sum(), theta)
    torch.testing.assert_close(exact, auto)
    with pytest.raises(ValueError, match="logits"):
        pg.sum_over_actions_gradient(logits, q[:3])


def test_log_derivative_estimate_is_unbiased_with_and_without_baseline():
    logits, q = _bandit()
    exact = pg.sum_over_actions_gradient(logits, q)
    for baseline in (0.0, float((torch.softmax(logits, -1) * q).sum()), -3.0):
        estimates = _sample_bandit(logits, q, M=4000, B=4, seed=1, baseline=baseline)
        assert _agrees(estimates, exact), baseline


def test_exact_variance_by_enumeration_matches_the_samples_and_falls_as_one_over_b():
    logits, q = _bandit()
    one = pg.estimator_variance(logits, q)
    for B in (1, 8):
        estimates = _sample_bandit(logits, q, M=20_000, B=B, seed=2)
        empirical = float(estimates.var(0).sum())
        # relative standard error of a variance estimate from 20,000 draws is ~1-3% here; 10% is > 3 SE
        assert empirical == pytest.approx(float(one) / B, rel=0.10)


def test_the_value_baseline_lowers_the_variance_and_its_best_value_is_a_weighted_mean():
    logits, q = _bandit()
    v = float((torch.softmax(logits, -1) * q).sum())
    assert pg.estimator_variance(logits, q, v) < pg.estimator_variance(logits, q, 0.0)
    bs = torch.linspace(-5, 10, 3001, dtype=F64)
    variances = torch.stack([pg.estimator_variance(logits, q, float(b)) for b in bs])
    pi = torch.softmax(logits, -1)
    norms = ((torch.eye(len(pi), dtype=F64) - pi) ** 2).sum(-1)  # |grad log pi(a)|^2
    best = float((pi * norms * q).sum() / (pi * norms).sum())  # minimizer of the parabola
    assert float(bs[variances.argmin()]) == pytest.approx(best, abs=0.01)


def test_gaussian_estimate_matches_the_analytic_gradient():
    mean, log_std = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([0.0, -0.5], dtype=F64)
    target = torch.tensor([1.0, 1.0], dtype=F64)
    d_mean, d_log_std = pg.gaussian_quadratic_gradient(mean, log_std, target)
    params = torch.cat([mean, log_std]).requires_grad_(True)
    (auto,) = torch.autograd.grad(pg.gaussian_quadratic_objective(*params.chunk(2), target), params)
    torch.testing.assert_close(auto, torch.cat([d_mean, d_log_std]))
    g = torch.Generator().manual_seed(3)
    M, B = 4000, 8
    actions = mean + log_std.exp() * torch.randn(M, B, 2, generator=g, dtype=F64)  # (M, B, D)
    rewards = -((actions - target) ** 2).sum(-1)  # (M, B)
    estimates = pg.estimate_gradients(pg.gaussian_surrogate, params.detach(), actions, rewards)
    assert _agrees(estimates, auto)


def test_policy_gradient_theorem_equals_autograd_through_exact_evaluation():
    mdp = gridworld()
    logits = torch.randn(mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(4), dtype=F64)
    for gamma in (0.9, 1.0):
        torch.testing.assert_close(pg.tabular_value_gradient(mdp, logits, gamma),
                                   pg.tabular_policy_gradient_theorem(mdp, logits, gamma))
    # and autograd against finite differences, on one coordinate
    eps, s, a = 1e-6, mdp.start, 1
    bumped = logits.clone()
    bumped[s, a] += eps
    value = lambda theta: policy_evaluation(mdp, torch.softmax(theta, -1), 0.9)[s]  # noqa: E731
    fd = (value(bumped) - value(logits)) / eps
    assert float(pg.tabular_value_gradient(mdp, logits, 0.9)[s, a]) == pytest.approx(float(fd), abs=1e-5)


def test_reinforce_on_episodes_is_unbiased_and_reward_to_go_lowers_the_variance():
    mdp, gamma, n = gridworld(), 0.9, 3000
    logits = 0.5 * torch.randn(mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(5), dtype=F64)
    exact = pg.tabular_value_gradient(mdp, logits, gamma)
    ep = pg.sample_episodes(mdp, torch.softmax(logits, -1), n, torch.Generator().manual_seed(6), max_steps=150)
    to_go = discounted_returns(ep["rewards"].T, gamma, terminated=ep["terminated"].T).T  # (n, T)
    T = to_go.shape[1]
    discounts = (gamma ** torch.arange(T, dtype=F64)).expand(n, T)
    alive = ep["alive"].to(F64)
    v = policy_evaluation(mdp, torch.softmax(logits, -1), gamma)

    def estimates(weights):
        return pg.estimate_gradients(pg.episode_surrogate, logits, ep["states"], ep["actions"], weights,
                                            alive).reshape(n, -1)

    whole = estimates(to_go[:, :1].expand(n, T))  # U_0 at every step
    rtg = estimates(discounts * to_go)
    baseline = estimates(discounts * (to_go - v[ep["states"]]))
    for est in (whole, rtg, baseline):
        assert _agrees(est, exact.reshape(-1))
    total = [float(e.var(0).sum()) for e in (whole, rtg, baseline)]
    assert total[0] > 1.2 * total[1] > 1.2 * total[2], total
    # dropping gamma^t (weights U_t, as practical REINFORCE does) is biased: its mean counts visits undiscounted
    no_discount = estimates(to_go)
    assert not _agrees(no_discount, exact.reshape(-1))
    assert _agrees(no_discount, pg.tabular_policy_gradient_theorem(mdp, logits, gamma, visits_discount=1.0).reshape(-1))


def test_undiscounted_visits_by_the_solve_equal_the_sum_over_time_of_the_state_distribution():
    mdp, gamma = gridworld(), 0.9
    logits = torch.randn(mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(7), dtype=F64)
    theta = logits.clone().requires_grad_(True)
    policy = torch.softmax(theta, -1)
    with torch.no_grad():
        q = torch.stack([(mdp.P[:, a] * (mdp.R[:, a] + gamma * policy_evaluation(mdp, policy, gamma))).sum(-1)
                         for a in range(mdp.n_actions)], -1)  # (S, A)
        P_pi = torch.einsum("sa,sat->st", policy, mdp.P)
        d, visits = torch.zeros(mdp.n_states, dtype=F64), torch.zeros(mdp.n_states, dtype=F64)
        d[mdp.start] = 1.0
        for _ in range(2000):  # P(S_t = s), step by step, until the episodes have ended
            visits += d
            d = (d * ~mdp.terminal) @ P_pi
    (slow,) = torch.autograd.grad((visits.unsqueeze(-1) * policy * q).sum(), theta)
    torch.testing.assert_close(pg.tabular_policy_gradient_theorem(mdp, logits, gamma, visits_discount=1.0), slow)
    torch.testing.assert_close(pg.tabular_policy_gradient_theorem(mdp, logits, gamma, visits_discount=gamma),
                               pg.tabular_policy_gradient_theorem(mdp, logits, gamma))


def test_steps_after_the_end_with_nan_do_not_leak():
    """0 * nan = nan: what comes after an episode's end is selected away, not multiplied by 0."""
    nan = float("nan")
    theta = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64).requires_grad_(True)
    states, actions = torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1])
    alive = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    clean = pg.episode_surrogate(theta, states, actions, torch.tensor([1.0, 2.0, 0.0], dtype=F64), alive)
    dirty = pg.episode_surrogate(theta, states, actions, torch.tensor([1.0, 2.0, nan], dtype=F64), alive)
    assert dirty.item() == clean.item()
    (g_clean,), (g_dirty,) = torch.autograd.grad(clean, theta), torch.autograd.grad(dirty, theta)
    assert torch.equal(g_clean, g_dirty)
    # sample_episodes: rewards "from" a terminal state (NaN in mdp.R) are never the episode's
    mdp = gridworld()
    R = mdp.R.clone()
    R[mdp.terminal] = nan
    policy = torch.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions, dtype=F64)
    ep = pg.sample_episodes(dataclasses.replace(mdp, R=R), policy, 20, torch.Generator().manual_seed(0))
    reference = pg.sample_episodes(mdp, policy, 20, torch.Generator().manual_seed(0))
    assert torch.isfinite(ep["rewards"]).all() and torch.equal(ep["rewards"], reference["rewards"])
