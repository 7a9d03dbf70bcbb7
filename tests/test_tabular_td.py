"""TD learning on the gridworld (rlnotes.algos.tabular, chapter 01) against the exact tables of DP.

Each learner runs with a fixed seed for a few thousand episodes (a few seconds) and must end within
TOL of the exact values, in max abs error over every state (and action). The starting tables are 0,
about 0.9 away from the answer, so TOL = 0.1 asks for most of the way.
"""

import pytest
import torch

from rlnotes.advantages import td_target
from rlnotes.algos import tabular
from rlnotes.envs import GridWorldEnv, gridworld

torch.set_num_threads(1)
GAMMA = 0.9
TOL = 0.1


@pytest.fixture(scope="module")
def mdp():
    return gridworld()  # AIMA's 4x3 world: slip 0.2, step reward -0.04


# ---- the updates, one transition at a time ----------------------------------------------------


def test_td0_update_moves_v_toward_the_td_target():
    v = torch.tensor([0.5, -0.2, 0.8], dtype=torch.float64)
    new = tabular.td0_update(v, state=0, reward=1.0, next_state=2, terminated=False, alpha=0.25, gamma=GAMMA)
    assert new[0].item() == pytest.approx(0.5 + 0.25 * (1.0 + GAMMA * 0.8 - 0.5))
    assert torch.equal(new[1:], v[1:]) and v[0] == 0.5  # other states untouched, input not mutated
    cut = tabular.td0_update(v, state=0, reward=1.0, next_state=2, terminated=True, alpha=0.25, gamma=GAMMA)
    assert cut[0].item() == pytest.approx(0.5 + 0.25 * (1.0 - 0.5))  # V(s') = 0.8 is ignored at termination


def test_q_learning_update_uses_the_max_and_sarsa_the_next_action():
    q = torch.tensor([[0.1, 0.2], [0.3, -0.7], [0.0, 0.0]], dtype=torch.float64)
    args = dict(state=0, action=1, reward=-0.5, next_state=1, terminated=False, alpha=0.5, gamma=GAMMA)
    learned = tabular.q_learning_update(q, **args)
    assert learned[0, 1].item() == pytest.approx(0.2 + 0.5 * (-0.5 + GAMMA * 0.3 - 0.2))  # max_a' Q(s', a') = 0.3
    on_policy = tabular.sarsa_update(q, next_action=1, **args)
    assert on_policy[0, 1].item() == pytest.approx(0.2 + 0.5 * (-0.5 + GAMMA * -0.7 - 0.2))  # Q(s', a'=1) = -0.7
    for new in (learned, on_policy):
        mask = torch.ones_like(q, dtype=torch.bool)
        mask[0, 1] = False
        assert torch.equal(new[mask], q[mask])
    assert q[0, 1] == 0.2  # pure: the input table is not mutated
    ended = tabular.q_learning_update(q, **{**args, "terminated": True})
    assert ended[0, 1].item() == pytest.approx(0.2 + 0.5 * (-0.5 - 0.2))


def test_updates_agree_with_td_target_on_random_transitions():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        q = torch.randn(6, 3, generator=g, dtype=torch.float64)
        s, a, s2, a2 = (int(i) for i in torch.randint(0, 3, (4,), generator=g))
        r, done = float(torch.randn(1, generator=g)), bool(torch.rand(1, generator=g) < 0.5)
        y = td_target(torch.tensor(r, dtype=torch.float64), q[s2].max(), torch.tensor(done), GAMMA)
        assert tabular.q_learning_update(q, s, a, r, s2, done, 1.0, GAMMA)[s, a].item() == pytest.approx(y.item())
        y = td_target(torch.tensor(r, dtype=torch.float64), q[s2, a2], torch.tensor(done), GAMMA)
        assert tabular.sarsa_update(q, s, a, r, s2, a2, done, 1.0, GAMMA)[s, a].item() == pytest.approx(y.item())


def test_epsilon_greedy_policy():
    q = torch.tensor([[1.0, 3.0, 2.0, 0.0], [5.0, 5.0, 0.0, 0.0]], dtype=torch.float64)
    policy = tabular.epsilon_greedy(q, 0.2)
    torch.testing.assert_close(policy.sum(-1), torch.ones(2, dtype=torch.float64))
    assert policy[0, 1].item() == pytest.approx(0.8 + 0.05) and policy[0, 0].item() == pytest.approx(0.05)
    assert policy[1, 0].item() == pytest.approx(0.85)  # ties: the first action, as greedy_policy
    with pytest.raises(ValueError, match="epsilon"):
        tabular.epsilon_greedy(q, 1.5)


def test_epsilon_greedy_optimum(mdp):
    q_star = tabular.value_iteration(mdp, GAMMA)[1]
    q0, _ = tabular.epsilon_greedy_optimum(mdp, GAMMA, 0.0)
    torch.testing.assert_close(q0, q_star)  # no exploration: Q*
    q_eps, policy = tabular.epsilon_greedy_optimum(mdp, GAMMA, 0.3)
    torch.testing.assert_close(policy, tabular.epsilon_greedy(q_eps, 0.3))
    # a fixed point: q_eps is the exact Q of its own epsilon-greedy policy ...
    torch.testing.assert_close(q_eps, tabular.q_from_v(mdp, tabular.policy_evaluation(mdp, policy, GAMMA), GAMMA))
    # ... at least as good as exploring around Q*'s greedy policy, and worse than Q* (exploration costs)
    v_naive = tabular.policy_evaluation(mdp, tabular.epsilon_greedy(q_star, 0.3), GAMMA)
    v_eps = tabular.policy_evaluation(mdp, policy, GAMMA)
    assert (v_eps >= v_naive - 1e-12).all() and (v_eps > v_naive + 1e-6).any()
    assert (q_star - q_eps).abs().max() > 0.2


def test_bad_arguments_are_rejected(mdp):
    policy = tabular.uniform_policy(mdp)
    with pytest.raises(ValueError, match="gamma"):
        tabular.td0_evaluation(mdp, policy, 1.5, 10)
    with pytest.raises(ValueError, match="alpha"):
        tabular.q_learning(mdp, GAMMA, 10, alpha=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        tabular.sarsa(mdp, GAMMA, 10, epsilon=-0.1)
    with pytest.raises(ValueError, match="episodes"):
        tabular.q_learning(mdp, GAMMA, 0)
    with pytest.raises(ValueError, match="policy"):
        tabular.td0_evaluation(mdp, policy[:, :2], GAMMA, 10)


# ---- the learners against the exact tables ----------------------------------------------------


def test_td0_learns_v_pi_of_the_random_policy(mdp):
    policy = tabular.uniform_policy(mdp)
    v_pi = tabular.policy_evaluation(mdp, policy, GAMMA)
    v, history = tabular.td0_evaluation(mdp, policy, GAMMA, 800, alpha=1.0, alpha_power=0.8, v_exact=v_pi, seed=0)
    assert (v - v_pi).abs().max() < TOL
    assert history["max_error"][-1] == pytest.approx(float((v - v_pi).abs().max()))
    assert history["max_error"][0] > 3 * TOL  # it did have to learn
    assert len(history["episode_return"]) == len(history["episode_length"]) == 800


def test_td0_bootstraps_through_truncation(mdp):
    """Episodes cut after 10 steps (about half of them): V(s') at the cut still stands for the rest of
    the episode, so TD(0) still learns the untruncated V_pi. Treating the cut as an end (V(s') = 0)
    would pull the values toward 0 and miss by far more than TOL."""
    policy = tabular.uniform_policy(mdp)
    v_pi = tabular.policy_evaluation(mdp, policy, GAMMA)
    env = GridWorldEnv(mdp, max_steps=10)
    v, history = tabular.td0_evaluation(env, policy, GAMMA, 2000, alpha=1.0, alpha_power=0.8, v_exact=v_pi, seed=0)
    assert max(history["episode_length"]) == 10  # truncations did happen
    assert (v - v_pi).abs().max() < TOL


def test_q_learning_learns_q_star_while_acting_at_random(mdp):
    """Off-policy: the behaviour is uniformly random (epsilon = 1), the table still converges to Q*."""
    q_star = tabular.value_iteration(mdp, GAMMA)[1]
    q, history = tabular.q_learning(mdp, GAMMA, 800, alpha=1.0, alpha_power=0.75, epsilon=1.0, q_exact=q_star, seed=0)
    assert (q - q_star).abs().max() < TOL
    assert history["max_error"][0] > 3 * TOL
    live = ~mdp.terminal
    assert torch.equal(q.argmax(-1)[live], q_star.argmax(-1)[live])  # and so the greedy policy is optimal


def test_sarsa_learns_the_q_of_its_own_epsilon_greedy_policy(mdp):
    """On-policy: with epsilon = 0.5 fixed, SARSA's table converges to the Q of the best epsilon-greedy
    policy (exploration included), which is far from Q*. The rarely tried pairs are the noisiest, so
    the max error gets a looser bound (0.2) than the mean (0.05)."""
    epsilon = 0.5
    q_star = tabular.value_iteration(mdp, GAMMA)[1]
    q_eps, _ = tabular.epsilon_greedy_optimum(mdp, GAMMA, epsilon)
    q, history = tabular.sarsa(mdp, GAMMA, 2000, alpha=0.5, alpha_power=0.6, epsilon=epsilon, q_exact=q_eps, seed=0)
    live = ~mdp.terminal
    error = (q - q_eps)[live].abs()
    assert error.max() < 0.2 and error.mean() < 0.05
    assert history["max_error"][0] > 0.5
    assert (q - q_star)[live].abs().mean() > 0.25  # not Q*: exploring near the pit costs, and SARSA counts it
    # the fixed point, checked directly: q is (close to) the exact Q of its own epsilon-greedy policy
    own = tabular.q_from_v(mdp, tabular.policy_evaluation(mdp, tabular.epsilon_greedy(q, epsilon), GAMMA), GAMMA)
    assert (q - own)[live].abs().mean() < 0.05
