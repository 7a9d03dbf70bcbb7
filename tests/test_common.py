"""The shared plumbing: policies and value nets (nets.py), rollout collection and evaluation (algos/common.py)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlnotes import nets
from rlnotes.algos.common import collect_rollout, env_actions, eval_returns, freeze_distribution, policy_kl
from rlnotes.envs import make_vec


def test_gaussian_log_prob_is_the_sum_of_the_closed_form_densities():
    torch.manual_seed(0)
    policy = nets.GaussianPolicy(3, 2, log_std_init=-0.5)
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    dist = policy(obs)
    mean, std = policy.mean(obs), math.exp(-0.5)
    by_hand = (-((actions - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), by_hand)
    entropy = 2 * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(std))  # D * entropy of N(., std^2)
    torch.testing.assert_close(dist.entropy(), torch.full((5,), entropy))


def test_new_policies_start_near_uniform_and_values_are_squeezed():
    torch.manual_seed(0)
    policy = nets.make_policy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3))
    probs = policy(torch.randn(8, 4)).probs
    assert probs.shape == (8, 3) and (probs - 1 / 3).abs().max() < 0.02  # output gain 0.01
    assert nets.ValueNetwork(4)(torch.randn(8, 4)).shape == (8,)
    assert isinstance(nets.make_policy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-2, 2, (1,))), nets.GaussianPolicy)
    with pytest.raises(ValueError, match="make_policy"):
        nets.make_policy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.MultiDiscrete([2, 2]))


def test_env_actions_clip_only_boxes():
    box = gym.spaces.Box(-2.0, 2.0, (1,))
    np.testing.assert_array_equal(env_actions(torch.tensor([[3.0], [-0.5]]), box), [[2.0], [-0.5]])
    np.testing.assert_array_equal(env_actions(torch.tensor([1, 0]), gym.spaces.Discrete(2)), [1, 0])


class Position(torch.nn.Module):
    """A 'value network' that returns the cart position, so V(final obs) and V(reset obs) differ visibly."""

    def forward(self, obs):
        return obs[:, 0] * 100.0


def test_rollout_bootstraps_a_truncated_episode_from_its_final_observation():
    envs = make_vec("CartPole-v1", 2, seed=3, max_episode_steps=5)  # truncate after 5 steps
    obs, _ = envs.reset(seed=3)
    policy = nets.CategoricalPolicy(4, 2)
    rollout, next_obs = collect_rollout(envs, policy, Position(), obs, num_steps=7)
    assert rollout.rewards.shape == rollout.values.shape == rollout.next_values.shape == (7, 2)
    assert rollout.truncated[4].all() and not rollout.truncated[:4].any()  # the cut, in both envs
    # Where no episode ended, V(s_{t+1}) is the value stored at t+1.
    torch.testing.assert_close(rollout.next_values[:4], rollout.values[1:5])
    # At the cut, the next stored obs is the NEW episode's first: the bootstrap must not use it...
    assert (rollout.next_values[4] - rollout.values[5]).abs().min() > 1e-3
    # ...but the final observation of the cut episode, which we replay to know it.
    replay = gym.make("CartPole-v1", max_episode_steps=5)
    replay_obs, _ = replay.reset(seed=3)
    for action in rollout.actions[:5, 0]:
        replay_obs, *_ = replay.step(int(action))
    assert rollout.next_values[4, 0].item() == pytest.approx(100.0 * replay_obs[0], abs=1e-4)
    logp = policy(rollout.obs.reshape(14, 4)).log_prob(rollout.actions.reshape(14)).reshape(7, 2)  # (T N,) -> (T, N)
    torch.testing.assert_close(rollout.logp, logp)
    assert rollout.episode_lengths == [5, 5] and rollout.episode_returns == [5.0, 5.0]
    assert next_obs.shape == (2, 4)


def test_eval_returns_matches_a_hand_loop():
    def always_right(obs):
        return torch.ones(len(obs), dtype=torch.long)

    returns = eval_returns(always_right, "CartPole-v1", 3, seed=11)
    for k, ret in enumerate(returns):
        env = gym.make("CartPole-v1")
        env.reset(seed=11 + k)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(1)
            total, done = total + reward, terminated or truncated
        assert ret == total
    with pytest.raises(ValueError, match="episodes"):
        eval_returns(always_right, "CartPole-v1", 0, seed=0)


def test_policy_kl_with_masked_actions_is_finite():
    """Invalid actions masked with -inf logits (an action-masking env): KL(pi_old || pi) was 0 * inf = NaN."""
    inf = float("inf")
    old_logits = torch.tensor([[0.0, 1.0, -inf], [2.0, -inf, -inf]], dtype=torch.float64)
    new_logits = torch.tensor([[0.5, 0.5, -inf], [1.0, -inf, -inf]], dtype=torch.float64, requires_grad=True)
    old = freeze_distribution(torch.distributions.Categorical(logits=old_logits))
    new = torch.distributions.Categorical(logits=new_logits, validate_args=False)
    kl = policy_kl(old, new)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(old, new))
    assert kl[1].item() == 0.0  # one possible action under both: KL 0
    (g,) = torch.autograd.grad(kl.sum(), new_logits)
    assert torch.isfinite(g).all()


def test_cheap_samplers_draw_from_the_policy_distribution():
    """policy.sample (Gumbel-max; mean + std * noise) must match the distribution's probabilities.
    40,000 draws: a frequency's standard error is <= 0.0025, so 0.01 is four of them."""
    torch.manual_seed(0)
    policy = nets.CategoricalPolicy(3, 4)
    with torch.no_grad():
        policy.logits[-1].weight.mul_(1000.0)  # far from uniform, so a wrong sampler shows
    obs = torch.randn(1, 3).expand(40_000, 3)
    expected = policy(obs[:1]).probs[0]
    counts = torch.bincount(policy.sample(obs), minlength=4) / 40_000
    assert expected.max() - expected.min() > 0.2
    torch.testing.assert_close(counts, expected.detach(), atol=0.01, rtol=0)
    gaussian = nets.GaussianPolicy(3, 2, log_std_init=-1.0)
    draws = gaussian.sample(obs)
    torch.testing.assert_close(draws.mean(0), gaussian.mean(obs[:1])[0].detach(), atol=0.01, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.full((2,), math.exp(-1.0)), atol=0.01, rtol=0)


def _balance(obs):
    """A hand-made CartPole controller: push toward where the pole is falling (scores 500 from these seeds)."""
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()


def test_evaluator_follows_the_protocol():
    from types import SimpleNamespace

    from rlnotes.algos.common import Evaluator

    config = SimpleNamespace(env="CartPole-v1", seed=0, eval_every=100, eval_episodes=3, total_steps=1000,
                             stop_when_solved=True)
    history, records = {}, []
    evaluator = Evaluator(config, history, progress=records.append)
    assert not evaluator(_balance, 50, 90, 1.0)  # no multiple of 100 passed: nothing happens
    assert history["eval_steps"] == [] and records == []
    always_left = lambda obs: torch.zeros(len(obs), dtype=torch.long)  # noqa: E731  falls in about 10 steps
    assert not evaluator(always_left, 90, 110, 2.0, loss=0.5)  # evaluated, not solved
    assert history["eval_steps"] == [110] and history["eval_means"][0] < 20 and history["eval_seconds"] == [2.0]
    assert records[-1]["loss"] == 0.5 and records[-1]["step"] == 110
    assert evaluator(_balance, 190, 205, 3.0)  # 500 >= 475: solved, stop
    assert (history["solved_step"], history["solved_seconds"]) == (205, 3.0)
    evaluator.finish(_balance, 205, 3.0)
    assert history["eval_mean"] == 500.0 and history["env_steps"] == 205 and len(history["eval_returns"]) == 3
    config.stop_when_solved = False  # solved is still recorded (first time only), but the run goes on
    assert not evaluator(_balance, 290, 300, 4.0) and history["solved_step"] == 205


@pytest.mark.parametrize("algo", ["dqn", "reinforce", "qac", "a2c", "ppo", "trpo"])
@pytest.mark.parametrize("field, bad", [("total_steps", 0), ("gamma", 1.5), ("eval_episodes", 0), ("seed", -1)])
def test_every_trainer_rejects_out_of_range_settings_by_name(algo, field, bad):
    import dataclasses
    import importlib

    module = importlib.import_module(f"rlnotes.algos.{algo}")
    assert dataclasses.is_dataclass(module.Config())
    with pytest.raises(ValueError, match=rf"{algo}\.Config: {field} must be"):
        module.Config(**{field: bad})
