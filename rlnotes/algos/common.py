"""Plumbing that every deep RL algorithm of the course shares: collecting a rollout, evaluating a policy.

The ideas live in `rlnotes.advantages`, `objectives` and `divergences`; this module only moves data
between gymnasium and torch, so that `a2c.py`, `ppo.py` and `trpo.py` differ only where their ideas do.

    rollout = collect_rollout(envs, policy, value_net, obs, num_steps)     # (T, N) tensors
    advantages, returns = gae(rollout.rewards, rollout.values, rollout.next_values,
                              rollout.terminated, rollout.truncated, gamma, lam)
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from rlnotes.envs import make_vec

__all__ = ["Rollout", "collect_rollout", "env_actions", "evaluate", "EVAL_SEED_OFFSET", "FINAL_EVAL_SEED_OFFSET"]

EVAL_SEED_OFFSET = 10_000  # evaluation episodes use seeds the training envs never see
FINAL_EVAL_SEED_OFFSET = 20_000  # and the final evaluation yet others


def env_actions(actions: torch.Tensor, action_space: gym.spaces.Space) -> np.ndarray:
    """What the env is given: discrete actions as they are; Gaussian actions clipped to the Box.

    The policy's log-prob is kept for the UNclipped sample (the one the Gaussian produced); only the
    env sees the clipped one (as Stable-Baselines3 and CleanRL do).
    """
    actions = actions.numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high)
    return actions


@dataclass
class Rollout:
    """T steps of N envs. Shapes: obs (T, N, obs_size); actions (T, N) or (T, N, D); the rest (T, N).

    next_values[t] = V(s_{t+1}) of the TRUE next state: the final observation where an episode ended
    at step t (so a truncated episode is bootstrapped from where it really stopped), the next
    observation otherwise. `terminated` and `truncated` stay separate: gae needs both.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    episode_returns: list  # returns of the episodes that ended during the rollout
    episode_lengths: list

    def flat(self) -> dict:
        """The fields a loss needs, with (T, N) flattened to (T*N,): for minibatches."""
        T, N = self.rewards.shape
        return {
            "obs": self.obs.reshape(T * N, *self.obs.shape[2:]),  # (T, N, obs) -> (T*N, obs)
            "actions": self.actions.reshape(T * N, *self.actions.shape[2:]),
            "logp": self.logp.reshape(T * N),
            "values": self.values.reshape(T * N),
        }


@torch.no_grad()
def collect_rollout(envs: gym.vector.VectorEnv, policy, value_net, obs: np.ndarray, num_steps: int):
    """Run `policy` for `num_steps` steps in every env of `envs` (SAME_STEP autoreset, `envs.make_vec`).

    policy(obs (N, obs_size)) -> a torch distribution; value_net(obs) -> (N,), or None (then values
    and next_values are zeros: REINFORCE needs none). obs: the current observations (N, obs_size).
    Returns (rollout, next_obs): continue the next rollout from next_obs.
    """
    N = envs.num_envs
    obs_buf, action_buf, logp_buf, reward_buf, value_buf = [], [], [], [], []
    terminated_buf, truncated_buf = [], []
    final = []  # (t, env index, final observation) of each episode that ended
    episode_returns, episode_lengths = [], []
    for t in range(num_steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32)  # (N, obs_size)
        dist = policy(obs_t)
        actions = dist.sample()  # (N,) or (N, D)
        next_obs, rewards, terminated, truncated, info = envs.step(env_actions(actions, envs.single_action_space))
        obs_buf.append(obs_t)
        action_buf.append(actions)
        logp_buf.append(dist.log_prob(actions))  # (N,)
        value_buf.append(value_net(obs_t) if value_net is not None else torch.zeros(N))
        reward_buf.append(torch.as_tensor(rewards, dtype=torch.float32))
        terminated_buf.append(torch.as_tensor(terminated))
        truncated_buf.append(torch.as_tensor(truncated))
        for i in np.flatnonzero(terminated | truncated):
            final.append((t, i, info["final_obs"][i]))  # SAME_STEP: next_obs[i] is already the next episode's
        for i in np.flatnonzero(info.get("_episode", [])):
            episode_returns.append(float(info["episode"]["r"][i]))
            episode_lengths.append(int(info["episode"]["l"][i]))
        obs = next_obs  # the classic trap: forget this and the agent replays its first observation forever

    values = torch.stack(value_buf)  # (T, N)
    last_values = value_net(torch.as_tensor(obs, dtype=torch.float32)) if value_net is not None else torch.zeros(N)
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])  # (T, N): V(s_{t+1}) if no episode ended
    if final and value_net is not None:
        rows, cols, final_obs = zip(*final)
        final_values = value_net(torch.as_tensor(np.stack(final_obs), dtype=torch.float32))  # (E,)
        next_values[list(rows), list(cols)] = final_values  # where one ended: V(final observation)
    rollout = Rollout(
        obs=torch.stack(obs_buf), actions=torch.stack(action_buf), logp=torch.stack(logp_buf),
        rewards=torch.stack(reward_buf), terminated=torch.stack(terminated_buf), truncated=torch.stack(truncated_buf),
        values=values, next_values=next_values, episode_returns=episode_returns, episode_lengths=episode_lengths,
    )
    return rollout, obs


@torch.no_grad()
def evaluate(act, env_id: str, episodes: int, seed: int, **env_kwargs) -> list:
    """Undiscounted returns of `episodes` episodes, one per env of a vector env seeded seed, seed+1, ...

    act(obs (N, obs_size) float32 tensor) -> actions tensor (N,) or (N, D): a deterministic policy,
    e.g. `q_net.greedy` or `policy.deterministic`. Only each env's first episode counts.
    """
    if episodes < 1:
        raise ValueError(f"evaluate: episodes must be >= 1, got {episodes}")
    envs = make_vec(env_id, episodes, seed=seed, **env_kwargs)
    obs, _ = envs.reset(seed=seed)
    returns = np.full(episodes, np.nan)
    running = np.zeros(episodes)
    while np.isnan(returns).any():
        actions = act(torch.as_tensor(obs, dtype=torch.float32))
        obs, rewards, terminated, truncated, _ = envs.step(env_actions(actions, envs.single_action_space))
        running += rewards
        ended = terminated | truncated
        first_end = ended & np.isnan(returns)
        returns[first_end] = running[first_end]
        running[ended] = 0.0
    envs.close()
    return returns.tolist()
