"""REINFORCE: the Monte Carlo policy gradient, with reward-to-go and a baseline (Williams 1992).

Introduced in notebook 02 (policy gradient). The policy's value is an expectation over actions,
V(s) = sum_a pi(a|s) Q(s, a) (an integral for continuous actions), so its gradient is

    dV/dtheta = sum_a dpi(a|s)/dtheta * Q(s, a)                      (discrete: a sum over actions)
              = E_{A ~ pi}[ dlog pi(A|s)/dtheta * Q(s, A) ]            (any actions: the log-derivative trick)

and the second form can be estimated by sampling: play, then weight the gradient of each action's
log-probability by how good it turned out (its reward-to-go), minus a baseline that does not depend
on the action. The loss whose gradient is that estimate is `rlnotes.objectives.pg_loss`.

The notebook's exact problems (a softmax "bandit", a tabular policy on the gridworld, a Gaussian
policy on a quadratic reward), where the true gradient is known and this estimate can be checked
against it, live in `rlnotes.exact.policy_gradient`; this module holds only the trainer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from rlnotes._checks import check_fields, option
from rlnotes.advantages import discounted_returns, normalize
from rlnotes.algos.common import Evaluator, env_actions
from rlnotes.envs import make_vec
from rlnotes.nets import ValueNetwork, flat_size, make_policy
from rlnotes.objectives import pg_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = ["Config", "Batch", "collect_episodes", "train"]


@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations; Discrete or Box actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(200_000, "budget of env steps used for learning, all envs together")
    num_envs: int = option(8, "episodes per update: one per env, all started afresh; typical 4-32")
    learning_rate: float = option(3e-3, "Adam step size of the policy; typical 1e-4 to 1e-2")
    gamma: float = option(0.99, "discount of the reward-to-go in [0, 1]; typical 0.95-0.999")
    baseline: str = option("value", "subtracted from the reward-to-go: value (learned V(s)), mean or none")
    value_learning_rate: float = option(1e-3, "Adam step size of the value baseline; typical 1e-4 to 1e-2")
    value_iters: int = option(40, "full-batch gradient steps of the value baseline per update; typical 10-80")
    normalize_advantages: bool = option(True, "centre and scale the weights of each batch (advantages.normalize)")
    ent_coef: float = option(0.0, "weight of the entropy bonus, >= 0; typical 0-0.01")
    max_grad_norm: float = option(1.0, "clip the policy gradient's global norm to this; typical 0.5-1")
    hidden_size: int = option(64, "units in each hidden layer (policy and value); typical 32-256")
    hidden_layers: int = option(2, "number of hidden layers; typical 1-3")
    log_std_init: float = option(0.0, "initial log std of a Gaussian policy (Box actions); typical -1 to 0")
    max_episode_steps: int = option(0, "time limit of an episode; 0 keeps the env's own")
    eval_every: int = option(2_048, "env steps between deterministic evaluations (not timed)")
    eval_episodes: int = option(10, "deterministic episodes per evaluation, and in the final one")
    stop_when_solved: bool = option(True, "stop once an evaluation reaches the env's reward_threshold")
    num_threads: int = option(1, "torch.set_num_threads; 1 is fastest for small nets")
    progress_bar: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        check_fields(
            self, "reinforce.Config",
            at_least_one=(
                "total_steps", "num_envs", "hidden_size", "eval_every", "eval_episodes", "num_threads",
                "value_iters",
            ),
            unit_interval=("gamma",),
            positive=("learning_rate", "value_learning_rate", "max_grad_norm"),
            non_negative=("hidden_layers", "seed", "max_episode_steps", "ent_coef"),
        )
        if self.baseline not in ("value", "mean", "none"):
            raise ValueError(f"reinforce.Config: baseline must be 'value', 'mean' or 'none', got {self.baseline!r}")

    @property
    def hidden(self) -> tuple:
        return (self.hidden_size,) * self.hidden_layers

    @property
    def env_kwargs(self) -> dict:
        return {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}


@dataclass
class Batch:
    """One episode from each of N envs, padded to the longest: obs (T, N, obs_size); actions (T, N) or
    (T, N, D); rewards, terminated, truncated, mask (T, N). mask marks the steps of each env's first
    episode; later steps (an env waits for the others) are not learned from."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor

    @property
    def episode_returns(self) -> list:
        """Undiscounted return of each env's first episode; rewards after it are dropped (selected, not
        multiplied by the mask, so a NaN there cannot leak)."""
        return torch.where(self.mask, self.rewards, torch.zeros_like(self.rewards)).sum(0).tolist()

    @property
    def steps(self) -> int:
        return int(self.mask.sum())


@torch.no_grad()
def collect_episodes(envs: gym.vector.VectorEnv, policy, seed: int | None = None) -> Batch:
    """Reset every env of `envs` and play until each has finished its first episode.

    Whole episodes, one per env, all from the current policy: the Monte Carlo return of every step is
    then known without any bootstrap. Envs that finish early keep stepping (a vector env steps all of
    its envs) but those steps are masked out, and the next batch starts from a fresh reset.
    """
    N = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    running = np.ones(N, dtype=bool)
    buf = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "mask")}
    while running.any():
        obs_t = torch.as_tensor(obs, dtype=torch.float32)  # (N, obs_size)
        actions = policy.sample(obs_t)  # (N,) or (N, D)
        next_obs, rewards, terminated, truncated, _ = envs.step(env_actions(actions, envs.single_action_space))
        buf["obs"].append(obs_t)
        buf["actions"].append(actions)
        buf["rewards"].append(torch.as_tensor(rewards, dtype=torch.float32))
        buf["terminated"].append(torch.as_tensor(terminated & running))
        buf["truncated"].append(torch.as_tensor(truncated & running))
        buf["mask"].append(torch.as_tensor(running.copy()))
        running &= ~(terminated | truncated)
        obs = next_obs  # the classic trap: forget this and the agent replays its first observation forever
    return Batch(**{k: torch.stack(v) for k, v in buf.items()})  # T x (N, ...) -> (T, N, ...)


def _check_spaces(envs) -> None:
    flat_size(envs.single_observation_space)  # raises unless Box
    make_policy(envs.single_observation_space, envs.single_action_space)  # raises unless Discrete or 1-d Box


HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "policy_loss", "value_loss", "entropy",
    "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train REINFORCE; return the history (dict of lists and numbers) plus the trained policy under "agent".

    Each update: N whole episodes; reward-to-go G_t of every step (advantages.discounted_returns, the
    sum cut where the episode ended); weights G_t - b(s_t); one gradient step on pg_loss; then the
    value baseline regressed on G_t. progress(record) is called after each evaluation. Keys:
        episode_steps, episode_returns        each training episode (stochastic policy)
        update_steps, policy_loss, value_loss, entropy    each update (value_loss: NaN without a value baseline)
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent                                  the trained policy (its .deterministic acts greedily)
    """
    # seed
    torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed, **config.env_kwargs)
    _check_spaces(envs)

    # nets and optimizer
    policy = make_policy(envs.single_observation_space, envs.single_action_space, config.hidden, log_std_init=config.log_std_init)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    value_net = ValueNetwork(flat_size(envs.single_observation_space), config.hidden) if config.baseline == "value" else None
    value_optimizer = torch.optim.Adam(value_net.parameters(), lr=config.value_learning_rate) if value_net else None

    # storage
    history = {key: [] for key in HISTORY_KEYS}

    step, update, train_seconds = 0, 0, 0.0
    bar = tqdm(total=config.total_steps, desc="reinforce", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout: one whole episode from every env, no gradient
        batch = collect_episodes(envs, policy, seed=config.seed if update == 0 else None)  # later resets continue the envs' RNG
        update += 1
        before, step = step, step + batch.steps
        for ret in batch.episode_returns:
            history["episode_steps"].append(step)
            history["episode_returns"].append(ret)

        # returns and advantages: reward-to-go, cut where each episode ended; minus the baseline
        ended = batch.terminated | batch.truncated  # (T, N); no bootstrap: REINFORCE is pure Monte Carlo
        returns = discounted_returns(batch.rewards, config.gamma, terminated=ended)  # (T, N)

        # flatten (T, N, ...) -> (B, ...): the steps of each env's first episode only
        mask = batch.mask  # (T, N) bool
        obs, actions, returns = batch.obs[mask], batch.actions[mask], returns[mask]
        if value_net is not None:
            with torch.no_grad():
                advantages = returns - value_net(obs)
        elif config.baseline == "mean":
            advantages = returns - returns.mean()
        else:
            advantages = returns
        if config.normalize_advantages and len(advantages) > 1:
            advantages = normalize(advantages)

        # update: one policy-gradient step, then the value baseline
        dist = policy(obs)
        entropy = dist.entropy().mean()
        pi_loss = pg_loss(dist.log_prob(actions), advantages)
        loss = pi_loss - config.ent_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        optimizer.step()
        v_loss = float("nan")
        if value_net is not None:
            for _ in range(config.value_iters):
                v_loss_t = value_loss(value_net(obs), returns)
                value_optimizer.zero_grad()
                v_loss_t.backward()
                value_optimizer.step()
            v_loss = v_loss_t.item()
        train_seconds += time.perf_counter() - tick
        bar.update(batch.steps)

        # diagnostics
        history["update_steps"].append(step)
        history["policy_loss"].append(pi_loss.item())
        history["value_loss"].append(v_loss)
        history["entropy"].append(entropy.item())

        # evaluation: deterministic, not timed; early stop when solved
        recent = history["episode_returns"][-config.num_envs:]
        if evaluator(policy.deterministic, before, step, train_seconds, train_return=float(np.mean(recent)),
                     entropy=entropy.item()):
            break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history["agent"] = policy
    return history
