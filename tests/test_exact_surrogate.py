"""Chapter 04's exact lab (rlnotes.exact.surrogate): the objective J against TRPO's surrogate L.

Everything here is exact (linear solves, float64), so the checks are identities with tight tolerances,
each against a computation that does not share the code under test: value iteration instead of the linear
solve, a truncated power series for the visits, central finite differences for the derivatives,
autograd through the solve for the gradient.
"""

import pytest
import torch

from rlnotes.algos import tabular
from rlnotes.envs import gridworld
from rlnotes.exact import policy_gradient as pg
from rlnotes.exact import surrogate as sx

torch.set_num_threads(1)
F64 = torch.float64


def _problems():
    """(name, mdp, gamma, logits_old): random MDPs of a few states, and the gridworld of chapters 00-02."""
    out = []
    for seed, (S, A, gamma) in enumerate([(3, 2, 0.5), (4, 3, 0.7), (6, 2, 0.9)]):
        g = torch.Generator().manual_seed(seed)
        mdp = sx.random_mdp(S, A, g)
        out.append((f"random{S}x{A}", mdp, gamma, torch.randn(S, A, generator=g, dtype=F64)))
    world = gridworld()
    g = torch.Generator().manual_seed(10)
    out.append(("gridworld", world, 0.9, 0.5 * torch.randn(world.n_states, world.n_actions, generator=g, dtype=F64)))
    return out


PROBLEMS = _problems()
IDS = [p[0] for p in PROBLEMS]


def _value_iteration_of_policy(mdp, policy, gamma, sweeps=3000):
    v = torch.zeros(mdp.n_states, dtype=F64)
    for _ in range(sweeps):
        v = tabular.bellman_expectation_backup(mdp, v, policy, gamma)
        v = torch.where(mdp.terminal, torch.zeros_like(v), v)
    return v


def test_random_mdp_is_a_valid_reproducible_mdp_without_terminal_states():
    a = sx.random_mdp(5, 3, torch.Generator().manual_seed(0))
    b = sx.random_mdp(5, 3, torch.Generator().manual_seed(0))
    assert a.P.shape == a.R.shape == (5, 3, 5) and a.P.dtype == F64
    torch.testing.assert_close(a.P.sum(-1), torch.ones(5, 3, dtype=F64))
    assert (a.P > 0).all() and not a.terminal.any() and a.start == 0
    assert torch.equal(a.P, b.P) and torch.equal(a.R, b.R)
    with pytest.raises(ValueError, match="n_states"):
        sx.random_mdp(0, 2)


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_objective_matches_value_iteration(name, mdp, gamma, old):
    policy = torch.softmax(old, -1)
    by_sweeps = _value_iteration_of_policy(mdp, policy, gamma)
    assert abs(float(sx.objective(mdp, old, gamma)) - float(by_sweeps[mdp.start])) < 1e-9


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_discounted_visits_are_the_power_series_and_weigh_the_rewards_into_j(name, mdp, gamma, old):
    policy = torch.softmax(old, -1)
    visits = sx.discounted_visits(mdp, policy, gamma)
    P_pi = torch.einsum("sa,sat->st", policy, mdp.P)
    P_pi[mdp.terminal] = 0.0
    state = torch.zeros(mdp.n_states, dtype=F64)
    state[mdp.start] = 1.0
    series = torch.zeros_like(state)
    for t in range(2000):  # sum_t gamma^t P(S_t = s), truncated where gamma^t is below 1e-90
        series += gamma**t * state
        state = state @ P_pi
    torch.testing.assert_close(visits, series, rtol=1e-10, atol=1e-12)
    r_pi = (policy * mdp.expected_reward).sum(-1)  # (S,)
    r_pi = torch.where(mdp.terminal, torch.zeros_like(r_pi), r_pi)
    assert abs(float(visits @ r_pi) - float(sx.objective(mdp, old, gamma))) < 1e-10  # J = sum_s eta(s) r_pi(s)
    if not mdp.terminal.any():
        assert abs(float(visits.sum()) - 1.0 / (1.0 - gamma)) < 1e-10


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_advantages_average_to_zero_under_their_policy(name, mdp, gamma, old):
    adv = sx.advantage(mdp, old, gamma)
    assert adv.shape == (mdp.n_states, mdp.n_actions)
    torch.testing.assert_close((torch.softmax(old, -1) * adv).sum(-1), torch.zeros(mdp.n_states, dtype=F64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_performance_difference_lemma_holds_far_from_theta_old(name, mdp, gamma, old):
    g = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 3.0):
        new = old + scale * torch.randn(old.shape, generator=g, dtype=F64)
        exact = float(sx.objective(mdp, new, gamma) - sx.objective(mdp, old, gamma))
        assert abs(float(sx.performance_difference(mdp, new, old, gamma)) - exact) < 1e-10


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_the_surrogate_matches_j_to_first_order_at_theta_old(name, mdp, gamma, old):
    assert abs(float(sx.surrogate(mdp, old, old, gamma)) - float(sx.objective(mdp, old, gamma))) < 1e-12
    theta = old.clone().requires_grad_(True)
    (grad_l,) = torch.autograd.grad(sx.surrogate(mdp, theta, old, gamma), theta)
    (grad_j,) = torch.autograd.grad(sx.objective(mdp, theta, gamma), theta)
    torch.testing.assert_close(grad_l, grad_j, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_j, pg.tabular_value_gradient(mdp, old, gamma), rtol=1e-9, atol=1e-12)
    d = torch.randn(old.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    h = 1e-5
    for f in (sx.objective, lambda m, x, gm: sx.surrogate(m, x, old, gm)):  # central finite differences
        slope = float(f(mdp, old + h * d, gamma) - f(mdp, old - h * d, gamma)) / (2 * h)
        assert abs(slope - float((grad_j * d).sum())) < 1e-7


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_the_gap_between_j_and_l_is_second_order(name, mdp, gamma, old):
    d = sx.advantage(mdp, old, gamma)
    gap = lambda t: float(sx.objective(mdp, old + t * d, gamma) - sx.surrogate(mdp, old + t * d, old, gamma))  # noqa: E731
    ratio = gap(2e-3) / gap(1e-3)
    assert 3.9 < ratio < 4.1, ratio  # halving the step quarters the gap


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_theorem_1_lower_bound_holds(name, mdp, gamma, old):
    C = sx.penalty_coefficient(mdp, old, gamma)
    assert C == pytest.approx(4 * float(sx.advantage(mdp, old, gamma).abs().max()) * gamma / (1 - gamma) ** 2)
    g = torch.Generator().manual_seed(3)
    for scale in (0.01, 0.1, 0.3, 1.0, 3.0):
        for _ in range(10):
            new = old + scale * torch.randn(old.shape, generator=g, dtype=F64)
            j = float(sx.objective(mdp, new, gamma))
            bound = float(sx.surrogate(mdp, new, old, gamma)) - C * float(sx.max_kl(mdp, old, new))
            assert j >= bound - 1e-12, (scale, j, bound)


@pytest.mark.parametrize("name, mdp, gamma, old", PROBLEMS, ids=IDS)
def test_the_advantage_table_is_the_natural_gradient_of_a_tabular_softmax(name, mdp, gamma, old):
    """F A_old = grad J, with F the Fisher matrix weighted by the old visits (block diagonal, one block a state)."""
    policy = torch.softmax(old, -1)
    visits = sx.discounted_visits(mdp, policy, gamma)
    adv = sx.advantage(mdp, old, gamma)
    fisher_times_adv = visits.unsqueeze(-1) * (policy * adv - policy * (policy * adv).sum(-1, keepdim=True))
    torch.testing.assert_close(fisher_times_adv, pg.tabular_value_gradient(mdp, old, gamma), rtol=1e-9, atol=1e-12)


def test_max_kl_is_zero_at_theta_old_and_ignores_terminal_states():
    world = gridworld()
    old = torch.zeros(world.n_states, world.n_actions, dtype=F64)
    assert float(sx.max_kl(world, old, old)) == 0.0
    changed = old.clone()
    changed[world.terminal] = 5.0 * torch.arange(world.n_actions, dtype=F64)  # no action is taken there
    assert float(sx.max_kl(world, old, changed)) == 0.0
    changed[world.start] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64)
    assert float(sx.max_kl(world, old, changed)) > 0.0


def test_curves_along_agrees_with_the_pointwise_functions():
    name, mdp, gamma, old = PROBLEMS[1]
    d = sx.advantage(mdp, old, gamma)
    steps = [0.0, 0.5, 2.0]
    curves = sx.curves_along(mdp, old, d, steps, gamma)
    assert curves["steps"].tolist() == steps
    for key in ("objective", "surrogate", "performance_difference", "max_kl", "bound"):
        assert curves[key].shape == (3,) and curves[key].dtype == F64
    for k, t in enumerate(steps):
        new = old + t * d
        assert float(curves["objective"][k]) == pytest.approx(float(sx.objective(mdp, new, gamma)), abs=1e-12)
        assert float(curves["surrogate"][k]) == pytest.approx(float(sx.surrogate(mdp, new, old, gamma)), abs=1e-12)
    assert abs(float(curves["objective"][0] - curves["surrogate"][0])) < 1e-12 and curves["bound"][0] == curves["surrogate"][0]
    torch.testing.assert_close(curves["performance_difference"], curves["objective"] - curves["objective"][0],
                               rtol=0, atol=1e-10)
    assert (curves["bound"] <= curves["objective"] + 1e-12).all()
    with pytest.raises(ValueError, match="gamma"):
        sx.penalty_coefficient(mdp, old, 1.0)
