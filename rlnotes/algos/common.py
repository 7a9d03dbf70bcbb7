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

from rlnotes.divergences import kl_categorical, kl_gaussian
from rlnotes.envs import make_vec
from rlnotes.objectives import surrogate_loss

__all__ = [
    "Rollout", "collect_rollout", "env_actions", "episode_flags", "minibatches", "OPTIMIZERS", "make_optimizer",
    "eval_returns", "Evaluator", "crossed", "EVAL_SEED_OFFSET", "FINAL_EVAL_SEED_OFFSET",
    "freeze_distribution", "policy_kl", "surrogate_and_kl",
]

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

    policy: a policy of `rlnotes.nets`: policy.sample(obs (N, obs_size)) -> actions, and
    policy(obs) -> a torch distribution (for the log-probs); value_net(obs) -> (N,), or None (then values
    and next_values are zeros: REINFORCE needs none). obs: the current observations (N, obs_size).
    Returns (rollout, next_obs): continue the next rollout from next_obs.

    Speed: inside the loop only what choosing an action needs (one policy forward and a sample);
    log-probs and values are computed after the loop in one batched forward each. The networks do
    not change during a rollout, so the numbers are the same as step by step (tests/test_common.py).
    """
    N = envs.num_envs
    obs_shape = envs.single_observation_space.shape
    obs_buf = np.zeros((num_steps, N, *obs_shape), dtype=np.float32)
    reward_buf = np.zeros((num_steps, N), dtype=np.float32)
    terminated_buf = np.zeros((num_steps, N), dtype=bool)
    truncated_buf = np.zeros((num_steps, N), dtype=bool)
    action_buf = []
    final = []  # (t, env index, final observation) of each episode that ended
    episode_returns, episode_lengths = [], []
    for t in range(num_steps):
        obs_buf[t] = obs
        actions = policy.sample(torch.from_numpy(obs_buf[t]))  # (N,) or (N, D), one forward, no gradient
        next_obs, reward_buf[t], terminated_buf[t], truncated_buf[t], info = envs.step(
            env_actions(actions, envs.single_action_space))
        action_buf.append(actions)
        if "_final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                final.append((t, i, info["final_obs"][i]))  # SAME_STEP: next_obs[i] is already the next episode's
        if "_episode" in info:
            for i in np.flatnonzero(info["_episode"]):
                episode_returns.append(float(info["episode"]["r"][i]))
                episode_lengths.append(int(info["episode"]["l"][i]))
        obs = next_obs  # the classic trap: forget this and the agent replays its first observation forever

    # after the loop: log-probs and values of all T*N states in one forward each
    obs_all = torch.from_numpy(obs_buf)  # (T, N, obs_size)
    actions_all = torch.stack(action_buf)  # (T, N) or (T, N, D)
    flat_obs = obs_all.reshape(num_steps * N, *obs_shape)
    logp = policy(flat_obs).log_prob(actions_all.reshape(num_steps * N, *actions_all.shape[2:])).reshape(num_steps, N)
    if value_net is not None:
        values = value_net(flat_obs).reshape(num_steps, N)  # (T*N,) -> (T, N)
        last_values = value_net(torch.as_tensor(obs, dtype=torch.float32))  # (N,)
    else:
        values, last_values = torch.zeros(num_steps, N), torch.zeros(N)
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])  # (T, N): V(s_{t+1}) if no episode ended
    if final and value_net is not None:
        rows, cols, final_obs = zip(*final)
        final_values = value_net(torch.as_tensor(np.stack(final_obs), dtype=torch.float32))  # (E,)
        next_values[list(rows), list(cols)] = final_values  # where one ended: V(final observation)
    rollout = Rollout(
        obs=obs_all, actions=actions_all, logp=logp, rewards=torch.from_numpy(reward_buf),
        terminated=torch.from_numpy(terminated_buf), truncated=torch.from_numpy(truncated_buf),
        values=values, next_values=next_values, episode_returns=episode_returns, episode_lengths=episode_lengths,
    )
    return rollout, obs


def episode_flags(terminated: torch.Tensor, truncated: torch.Tensor, bootstrap_truncated: bool = True):
    """The (terminated, truncated) pair that `gae` receives.

    bootstrap_truncated=True passes them through: a time-limit cut is bootstrapped from V(final obs).
    False reproduces the classic bug, a cut treated as the end of the task: (terminated | truncated, 0).
    Introduced in notebook 03 (`a2c.Config.bootstrap_truncated`; PPO has the same switch).
    """
    if bootstrap_truncated:
        return terminated, truncated
    return terminated | truncated, torch.zeros_like(truncated)


def minibatches(batch_size: int, minibatch_size: int, epochs: int = 1, generator: torch.Generator | None = None):
    """Row indices of each minibatch: `epochs` passes over range(batch_size), each shuffled, in chunks.

    As CleanRL's and Stable-Baselines3's PPO: a fresh permutation every epoch, chunks of
    `minibatch_size` (the last may be smaller). One pass with one minibatch of the whole batch (A2C)
    is the batch in order: nothing to shuffle, and the generator is not touched.
    """
    if epochs == 1 and minibatch_size >= batch_size:
        yield torch.arange(batch_size)
        return
    for _ in range(epochs):
        order = torch.randperm(batch_size, generator=generator)
        for start in range(0, batch_size, minibatch_size):
            yield order[start : start + minibatch_size]


OPTIMIZERS = ("adam", "rmsprop")


def make_optimizer(name: str, params, learning_rate: float) -> torch.optim.Optimizer:
    """The optimizer of an actor-critic's parameters, with Stable-Baselines3's settings.

    adam: Adam, eps 1e-5 (SB3's ActorCriticPolicy), fused (one kernel: faster on CPU, same update).
    rmsprop: RMSprop, alpha 0.99, eps 1e-5 (SB3's A2C with use_rms_prop).
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, eps=1e-5, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate, alpha=0.99, eps=1e-5)
    raise ValueError(f"make_optimizer: name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


@torch.no_grad()
def eval_returns(act, env_id: str, episodes: int, seed: int, **env_kwargs) -> list:
    """Undiscounted returns of `episodes` episodes, one per env of a vector env seeded seed, seed+1, ...

    act(obs (N, obs_size) float32 tensor) -> actions tensor (N,) or (N, D): a deterministic policy,
    e.g. `q_net.greedy` or `policy.deterministic`. Only each env's first episode counts.
    Named after the history key it fills (`eval_returns`); `rlnotes.lm.sampling.evaluate` is another
    thing (an accuracy), hence not `evaluate`.
    """
    if episodes < 1:
        raise ValueError(f"eval_returns: episodes must be >= 1, got {episodes}")
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


def crossed(before: int, after: int, every: int) -> bool:
    """Did a step counter pass a multiple of `every` when it went from `before` to `after`?

    Loops advance by num_envs or whole batches, so "step % every == 0" would miss most multiples.
    """
    return after // every > before // every


class Evaluator:
    """The course's evaluation protocol, in one place for every trainer (dqn, reinforce, qac, a2c, ppo, trpo).

    Every `config.eval_every` env steps (and when the budget is spent): `config.eval_episodes`
    deterministic episodes on seeds the training never sees. Their time is not training time: the
    trainers stop their clock around the call. Once the mean reaches the env's reward_threshold
    (475 on CartPole-v1) the run is solved, and stops if `config.stop_when_solved`.

        evaluator = Evaluator(config, history, progress, bar)        # adds eval_* and solved_* to history
        if evaluator(policy.deterministic, before, step, train_seconds, loss=...):   # True: stop, solved
            break
        evaluator.finish(policy.deterministic, step, train_seconds)  # final evaluation on fresh seeds
    """

    def __init__(self, config, history: dict, progress=None, bar=None):
        self.config, self.history, self.progress, self.bar = config, history, progress, bar
        self.threshold = gym.spec(config.env).reward_threshold
        self.env_kwargs = getattr(config, "env_kwargs", None) or {}  # e.g. max_episode_steps, as in training
        history.update(eval_steps=[], eval_means=[], eval_seconds=[], solved_step=None, solved_seconds=None)

    def due(self, before: int, step: int) -> bool:
        """Is an evaluation due after the counter went from `before` to `step`?"""
        return crossed(before, step, self.config.eval_every) or step >= self.config.total_steps

    def __call__(self, act, before: int, step: int, train_seconds: float, **extra) -> bool:
        """Evaluate if the step counter passed a multiple of eval_every going from `before` to `step`
        (or reached total_steps); `extra` goes into the progress record. Returns True to stop."""
        if not self.due(before, step):
            return False
        eval_mean = float(np.mean(eval_returns(act, self.config.env, self.config.eval_episodes,
                                           self.config.seed + EVAL_SEED_OFFSET, **self.env_kwargs)))
        self.history["eval_steps"].append(step)
        self.history["eval_means"].append(eval_mean)
        self.history["eval_seconds"].append(train_seconds)
        if self.bar is not None:
            self.bar.set_postfix(eval_mean=f"{eval_mean:.1f}")
        if self.progress is not None:
            self.progress({"step": step, "eval_mean": eval_mean, **extra, "train_seconds": round(train_seconds, 2)})
        solved = self.threshold is not None and eval_mean >= self.threshold
        if solved and self.history["solved_step"] is None:
            self.history.update(solved_step=step, solved_seconds=train_seconds)
        return solved and self.config.stop_when_solved

    def finish(self, act, step: int, train_seconds: float) -> None:
        """The final evaluation, on seeds used by no earlier evaluation; totals into the history."""
        returns = eval_returns(act, self.config.env, self.config.eval_episodes, self.config.seed + FINAL_EVAL_SEED_OFFSET,
                           **self.env_kwargs)
        self.history.update(train_seconds=train_seconds, env_steps=step, eval_returns=returns,
                            eval_mean=float(np.mean(returns)))


def freeze_distribution(dist, rows=None):
    """A detached copy of a policy's distribution, optionally restricted to some batch rows.

    The old policy pi_old is data (TRPO's KL constraint, PPO's KL penalty): its parameters must not
    receive gradient, and a minibatch needs the old distribution of its own rows only.
    dist: Categorical (logits (B, A)) or Independent(Normal) (mean, std (B, D)), as the policies
    of `rlnotes.nets` return; rows: an index into B (a tensor of indices, a slice) or None for all.
    """
    rows = slice(None) if rows is None else rows
    if isinstance(dist, torch.distributions.Categorical):
        return torch.distributions.Categorical(logits=dist.logits.detach()[rows], validate_args=False)
    if isinstance(dist, torch.distributions.Independent) and isinstance(dist.base_dist, torch.distributions.Normal):
        base = dist.base_dist
        normal = torch.distributions.Normal(base.loc.detach()[rows], base.scale.detach()[rows], validate_args=False)
        return torch.distributions.Independent(normal, 1, validate_args=False)
    raise ValueError(f"freeze_distribution: dist must be Categorical or Independent(Normal), got {type(dist).__name__}")


def policy_kl(p, q):
    """Exact KL(p || q) per state, (B,), between two policies' distributions over the same B states.

    Dispatches to `rlnotes.divergences` (kl_categorical on the logits, kl_gaussian on mean and std):
    the formulas live there. Pass the old policy as p (``freeze_distribution``) and the current one as q
    for TRPO's constraint and PPO's penalty, KL(pi_old || pi_theta).
    """
    if isinstance(p, torch.distributions.Categorical) and isinstance(q, torch.distributions.Categorical):
        return kl_categorical(p.logits, q.logits)  # (B, A) -> (B,)
    independent = torch.distributions.Independent
    if isinstance(p, independent) and isinstance(q, independent):
        p_base, q_base = p.base_dist, q.base_dist
        return kl_gaussian(p_base.loc, p_base.scale, q_base.loc, q_base.scale)  # (B, D) -> (B,)
    raise ValueError(f"policy_kl: p and q must both be Categorical or both Independent(Normal), "
                     f"got {type(p).__name__} and {type(q).__name__}")


def surrogate_and_kl(policy, obs, actions, old_logp, advantages, old_dist):
    """The true surrogate mean(r * A) and the true mean KL(pi_old || pi) of `policy` as it is now (no grad)."""
    with torch.no_grad():
        dist = policy(obs)
        surrogate = -surrogate_loss(dist.log_prob(actions), old_logp, advantages).mean()
        kl = policy_kl(old_dist, dist).mean()
    return surrogate, kl
