"""Exact dynamic programming on the gridworld, against published numbers and brute force."""

import dataclasses

import pytest
import torch

from rlnotes.algos import tabular
from rlnotes.envs import GridWorldEnv, TabularMDP, gridworld

# V* of the AIMA 4x3 world, Russell & Norvig, Artificial Intelligence: A Modern Approach, 3rd ed.,
# Figure 17.3 (gamma = 1, reward -0.04 a move, 0.8/0.1/0.1 slip). Keys are (row, col), row 0 on top.
AIMA_V_STAR = {
    (0, 0): 0.812, (0, 1): 0.868, (0, 2): 0.918,
    (1, 0): 0.762, (1, 2): 0.660,
    (2, 0): 0.705, (2, 1): 0.655, (2, 2): 0.611, (2, 3): 0.388,
}


@pytest.fixture(scope="module")
def world():
    return gridworld()


def test_transitions_are_the_aima_ones(world):
    s = world.state_of(2, 0)  # start, bottom left
    up = world.P[s, 0]
    assert up[world.state_of(1, 0)] == pytest.approx(0.8)  # intended
    assert up[world.state_of(2, 1)] == pytest.approx(0.1)  # slips right
    assert up[s] == pytest.approx(0.1)  # slips left into the border: stays
    goal = world.state_of(0, 3)
    assert world.R[world.state_of(0, 2), 1, goal] == pytest.approx(-0.04 + 1.0)
    assert world.terminal.sum() == 2 and world.n_states == 11


def test_value_iteration_reproduces_aima(world):
    v, q, deltas = tabular.value_iteration(world, gamma=1.0)
    for cell, value in AIMA_V_STAR.items():
        assert v[world.state_of(*cell)] == pytest.approx(value, abs=6e-4)
    assert torch.allclose(q.max(-1).values, v)
    assert deltas[-1] < 1e-12


def test_q_star_is_the_max_over_every_deterministic_policy(world):
    q_all = tabular.q_of_every_deterministic_policy(world, gamma=0.9)
    assert q_all.shape == (4**9, 11, 4)
    _, q_star, _ = tabular.value_iteration(world, gamma=0.9)
    assert torch.allclose(q_all.max(0).values, q_star, atol=1e-9)


def test_policy_evaluation_solves_the_bellman_equation(world):
    g = torch.Generator().manual_seed(0)
    policy = torch.softmax(torch.randn(11, 4, generator=g, dtype=torch.float64), -1)
    v = tabular.policy_evaluation(world, policy, gamma=0.95)
    assert torch.allclose(tabular.bellman_expectation_backup(world, v, policy, 0.95), v, atol=1e-12)
    assert (v[world.terminal] == 0).all()


def test_iterated_backups_converge_to_the_exact_values(world):
    policy = tabular.uniform_policy(world)
    v = torch.zeros(11, dtype=torch.float64)
    for _ in range(2000):
        v = tabular.bellman_expectation_backup(world, v, policy, 1.0)
    assert torch.allclose(v, tabular.policy_evaluation(world, policy, 1.0), atol=1e-8)


def test_sampled_returns_average_to_v(world):
    policy = tabular.uniform_policy(world)
    v = tabular.policy_evaluation(world, policy, gamma=1.0)
    returns = tabular.sample_returns(world, policy, 1.0, 20_000, torch.Generator().manual_seed(1))
    standard_error = returns.std() / len(returns) ** 0.5
    assert abs(returns.mean() - v[world.start]) < 4 * standard_error


def test_impossible_transitions_and_terminal_rewards_with_nan_or_inf_do_not_leak(world):
    """0 * inf = nan: a transition of probability 0, or a step after the end, must add exactly nothing."""
    R = world.R.clone()
    R[world.P == 0] = float("inf")  # rewards of transitions that never happen
    odd = dataclasses.replace(world, R=R)
    v = torch.linspace(-1.0, 1.0, 11, dtype=torch.float64)
    assert torch.equal(tabular.q_from_v(odd, v, 0.9), tabular.q_from_v(world, v, 0.9))
    v_star, q_star, _ = tabular.value_iteration(world, gamma=0.9)
    v_odd, q_odd, _ = tabular.value_iteration(odd, gamma=0.9)
    assert torch.equal(v_odd, v_star) and torch.equal(q_odd, q_star)
    assert torch.equal(odd.expected_reward, world.expected_reward)
    pi = tabular.uniform_policy(world)
    assert torch.equal(tabular.policy_evaluation(odd, pi, 0.9), tabular.policy_evaluation(world, pi, 0.9))
    # sample_returns: rewards "from" a terminal state are never part of a return
    R = world.R.clone()
    R[world.terminal] = float("nan")
    policy = tabular.uniform_policy(world)
    returns = tabular.sample_returns(dataclasses.replace(world, R=R), policy, 0.9, 50, torch.Generator().manual_seed(2))
    assert torch.equal(returns, tabular.sample_returns(world, policy, 0.9, 50, torch.Generator().manual_seed(2)))


def test_gymnasium_env_samples_the_same_dynamics(world):
    env = GridWorldEnv(world)
    env.reset(seed=3)
    s = world.state_of(2, 0)
    counts = torch.zeros(11)
    for _ in range(4000):
        env.state, env.steps = s, 0
        next_state, reward, terminated, truncated, _ = env.step(0)
        counts[next_state] += 1
    frequencies = counts / counts.sum()
    assert torch.allclose(frequencies.double(), world.P[s, 0], atol=0.03)  # 4000 draws: std <= 0.008


def test_env_truncates_but_does_not_terminate_on_time_limit(world):
    env = GridWorldEnv(gridworld(slip=0.0), max_steps=5)
    env.reset(seed=0)
    flags = [env.step(3)[2:4] for _ in range(5)]  # walk left into the border: never ends by itself
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_errors_name_the_problem(world):
    never_ends = torch.nn.functional.one_hot(torch.full((11,), 3), 4).double()  # always left: never terminates
    with pytest.raises(ValueError, match="no finite V_pi"):
        tabular.policy_evaluation(world, never_ends, gamma=1.0)
    with pytest.raises(ValueError, match="gamma"):
        tabular.value_iteration(world, gamma=1.5)
    with pytest.raises(ValueError, match="policy"):
        tabular.policy_evaluation(world, torch.ones(3, 4), gamma=0.9)
    with pytest.raises(ValueError, match="slip"):
        gridworld(slip=-0.1)
    with pytest.raises(ValueError, match="sum to 1"):
        TabularMDP(torch.ones(2, 1, 2), torch.zeros(2, 1, 2), torch.zeros(2, dtype=torch.bool))
