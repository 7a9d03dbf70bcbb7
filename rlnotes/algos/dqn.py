"""DQN: a Q-network learned by TD from a replay buffer, with a target network (Mnih et al. 2015).

Introduced in notebook 01 (value learning). Q-learning's update with a network in place of the table:

    target   y = r + gamma * (1 - terminated) * max_a' Q_target(s', a')    (rlnotes.advantages.td_target)
    loss     Huber(Q(s, a) - y), averaged over a minibatch drawn from the replay buffer

Two devices keep it stable: the replay buffer breaks up the correlation between consecutive
transitions, and the target network (a lagged copy of Q) keeps the target from moving with every
gradient step. The defaults are RL Zoo's tuned hyperparameters for CartPole-v1
(rl-baselines3-zoo, hyperparams/dqn.yml), renamed: train_freq -> train_every,
target_update_interval -> target_update_every, exploration_final_eps -> end_epsilon.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlnotes._checks import check_fields, option
from rlnotes.advantages import td_target
from rlnotes.algos.common import Evaluator, crossed
from rlnotes.envs import final_next_obs, make_vec
from rlnotes.nets import QNetwork, flat_size
from rlnotes.utils import seed_everything

__all__ = [
    "Config", "ReplayBuffer", "linear_schedule", "dqn_targets", "dqn_loss", "epsilon_greedy_actions", "collect", "train",
]



@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(50_000, "budget of env steps, all envs together")
    num_envs: int = option(1, "parallel envs collecting transitions; typical 1-8")
    learning_rate: float = option(2.3e-3, "Adam step size; typical 1e-4 to 3e-3")
    buffer_size: int = option(100_000, "replay buffer capacity, in transitions; typical 1e4-1e6")
    batch_size: int = option(64, "transitions per gradient step; typical 32-256")
    gamma: float = option(0.99, "discount factor in [0, 1]; typical 0.95-0.999")
    learning_starts: int = option(1_000, "env steps of collection before the first update")
    train_every: int = option(256, "env steps between two training phases; typical 1-256")
    gradient_steps: int = option(128, "gradient steps in each training phase; typical 1-128")
    target_update_every: int = option(10, "env steps between copies of Q into the target network")
    start_epsilon: float = option(1.0, "exploration probability at the start, in [0, 1]")
    end_epsilon: float = option(0.04, "exploration probability after the decay; typical 0.01-0.1")
    exploration_fraction: float = option(0.16, "share of total_steps over which epsilon decays; typical 0.1-0.5")
    hidden_size: int = option(256, "units in each hidden layer of the Q-network; typical 64-256")
    hidden_layers: int = option(2, "number of hidden layers of the Q-network; typical 1-3")
    max_grad_norm: float = option(10.0, "clip the gradient's global norm to this; typical 1-10")
    double_q: bool = option(False, "double DQN: choose a' with Q, value it with Q_target")
    eval_every: int = option(2_048, "env steps between greedy evaluations (not timed)")
    eval_episodes: int = option(10, "greedy episodes per evaluation, and in the final one")
    stop_when_solved: bool = option(True, "stop once an evaluation reaches the env's reward_threshold")
    num_threads: int = option(1, "torch.set_num_threads; 1 is fastest for small nets")
    progress_bar: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        check_fields(
            self, "dqn.Config",
            at_least_one=(
                "total_steps", "num_envs", "buffer_size", "batch_size", "train_every", "gradient_steps",
                "target_update_every", "hidden_size", "eval_every", "eval_episodes", "num_threads",
            ),
            unit_interval=("gamma", "start_epsilon", "end_epsilon", "exploration_fraction"),
            positive=("learning_rate", "max_grad_norm"),
            non_negative=("learning_starts", "hidden_layers", "seed"),
        )

    @property
    def exploration_steps(self) -> int:
        """Env steps over which epsilon goes from start_epsilon to end_epsilon."""
        return int(self.exploration_fraction * self.total_steps)


# ---- pieces: buffer, schedule, target, loss, evaluation ---------------------------------------


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', terminated); when full, the oldest are overwritten.

    s' is the TRUE next observation (the final one when an episode ended), so a truncated
    transition is bootstrapped like any other; that is why `truncated` is not stored.
    Stored in numpy (cheap row writes), handed out as torch tensors.
    """

    def __init__(self, capacity: int, obs_shape: tuple):
        self.capacity, self.size, self.next_index = capacity, 0, 0
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Store N transitions: obs, next_obs (N, *obs_shape); actions, rewards, terminated (N,)."""
        n = len(actions)
        rows = (self.next_index + np.arange(n)) % self.capacity  # (N,) slots, wrapping around
        self.obs[rows] = obs
        self.next_obs[rows] = next_obs
        self.actions[rows] = actions
        self.rewards[rows] = rewards
        self.terminated[rows] = terminated
        self.next_index = (self.next_index + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """B transitions drawn uniformly with replacement: obs, next_obs (B, *obs_shape); the rest (B,)."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        rows = torch.randint(self.size, (batch_size,), generator=generator).numpy()
        return {
            "obs": torch.from_numpy(self.obs[rows]),
            "actions": torch.from_numpy(self.actions[rows]),
            "rewards": torch.from_numpy(self.rewards[rows]),
            "next_obs": torch.from_numpy(self.next_obs[rows]),
            "terminated": torch.from_numpy(self.terminated[rows]),
        }


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """`start` at step 0, `end` from step `duration` on, a straight line in between (epsilon's decay)."""
    if duration <= 0:
        return end
    return start + min(step / duration, 1.0) * (end - start)


def dqn_targets(target_net, rewards, next_obs, terminated, gamma, q_net=None) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * max_a' Q_target(s', a'), computed without gradient.

    rewards, terminated: (B,); next_obs: (B, obs_size), the true next observations (the final
    observation after a truncation, never the reset one). Returns y (B,).
    With `q_net` (double DQN, van Hasselt et al. 2016): a' = argmax_a' Q(s', a'), valued by Q_target,
    which removes the max's upward bias.
    """
    with torch.no_grad():
        next_q = target_net(next_obs)  # (B, A)
        if q_net is None:
            next_values = next_q.max(-1).values  # (B, A) -> (B,)
        else:
            best = q_net(next_obs).argmax(-1, keepdim=True)  # (B, 1)
            next_values = next_q.gather(-1, best).squeeze(-1)  # (B, A) -> (B,)
        return td_target(rewards, next_values, terminated, gamma)


def dqn_loss(q_net, target_net, batch: dict, gamma: float, double_q: bool = False):
    """Huber loss between Q(s, a) and the TD target, on a batch from `ReplayBuffer.sample`.

    Returns (loss (), q_taken (B,)): q_taken is Q(s, a) of the actions taken, for diagnostics.
    """
    targets = dqn_targets(target_net, batch["rewards"], batch["next_obs"], batch["terminated"], gamma,
                          q_net if double_q else None)  # (B,)
    q_taken = q_net(batch["obs"]).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # (B, A) -> (B,)
    return F.smooth_l1_loss(q_taken, targets), q_taken.detach()


def epsilon_greedy_actions(q_net, obs: torch.Tensor, epsilon: float, generator=None) -> torch.Tensor:
    """With probability epsilon a uniform random action, else argmax_a Q(s, a): obs (N, obs_size) -> (N,)."""
    with torch.no_grad():
        q_values = q_net(obs)  # (N, A)
    n, n_actions = q_values.shape
    random_actions = torch.randint(n_actions, (n,), generator=generator)
    explore = torch.rand(n, generator=generator) < epsilon
    return torch.where(explore, random_actions, q_values.argmax(-1))


def collect(envs, q_net, obs: np.ndarray, epsilon: float, buffer: ReplayBuffer, generator=None):
    """One epsilon-greedy step of every env, stored in `buffer`. obs (N, obs_size). Returns (next_obs, info).

    Bootstrap through truncation, not through termination: the buffer gets the TRUE s' (the final
    observation where an episode ended: SAME_STEP autoreset has already put the next episode's
    first observation in next_obs) and only `terminated`, so a time-limit cut is bootstrapped.
    """
    actions = epsilon_greedy_actions(q_net, torch.as_tensor(obs, dtype=torch.float32), epsilon, generator)  # (N,)
    next_obs, rewards, terminated, truncated, info = envs.step(actions.numpy())
    buffer.add(obs, actions.numpy(), rewards, final_next_obs(next_obs, info), terminated)
    return next_obs, info


def _check_spaces(envs) -> None:
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        raise ValueError(f"dqn: needs Discrete actions, got {envs.single_action_space}")
    flat_size(envs.single_observation_space)  # raises unless Box


# ---- the training loop ------------------------------------------------------------------------


HISTORY_KEYS = ("episode_steps", "episode_returns", "update_steps", "loss", "q_mean", "eval_steps", "eval_means", "eval_seconds")


def train(config: Config, progress=None) -> dict:
    """Train DQN; return the history (dict of lists and numbers) plus the trained network under "agent".

    progress(record) is called after each evaluation with a small dict (step, eval_mean, epsilon,
    loss, train_seconds). Keys of the history:
        episode_steps, episode_returns         each finished training episode (exploration included)
        update_steps, loss, q_mean             each training phase (an update): env steps so far, mean Huber
                                               loss and mean Q(s, a) of its gradient steps
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent                                  the trained QNetwork
    """
    # seed
    torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed)
    _check_spaces(envs)
    obs_shape = envs.single_observation_space.shape
    n_actions = int(envs.single_action_space.n)

    # nets and optimizer
    q_net = QNetwork(flat_size(envs.single_observation_space), n_actions, (config.hidden_size,) * config.hidden_layers)
    target_net = copy.deepcopy(q_net).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=config.learning_rate, fused=True)  # fused: one kernel, ~3x faster on CPU

    # storage
    buffer = ReplayBuffer(config.buffer_size, obs_shape)
    history = {key: [] for key in HISTORY_KEYS}

    obs, _ = envs.reset(seed=config.seed)
    step, train_seconds, loss_value = 0, 0.0, float("nan")
    bar = tqdm(total=config.total_steps, desc="dqn", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout: one epsilon-greedy step of every env into the replay buffer, no gradient
        epsilon = linear_schedule(config.start_epsilon, config.end_epsilon, config.exploration_steps, step)
        next_obs, info = collect(envs, q_net, obs, epsilon, buffer, generator)
        obs = next_obs  # continue from the reset observation where an episode ended
        before, step = step, step + config.num_envs
        for i in np.flatnonzero(info.get("_episode", [])):
            history["episode_steps"].append(step)
            history["episode_returns"].append(float(info["episode"]["r"][i]))

        # update: a phase of gradient steps on minibatches from the buffer (the TD targets are in dqn_loss)
        if step >= config.learning_starts and crossed(before, step, config.train_every):
            stats = {key: [] for key in ("loss", "q_mean")}
            for _ in range(config.gradient_steps):
                batch = buffer.sample(config.batch_size, generator)
                loss, q_taken = dqn_loss(q_net, target_net, batch, config.gamma, config.double_q)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(q_net.parameters(), config.max_grad_norm)
                optimizer.step()
                stats["loss"].append(loss.item())
                stats["q_mean"].append(q_taken.mean().item())

            # diagnostics: the phase's mean loss and mean Q(s, a)
            history["update_steps"].append(step)
            for key, values in stats.items():
                history[key].append(float(np.mean(values)))
            loss_value = history["loss"][-1]
        if crossed(before, step, config.target_update_every):
            target_net.load_state_dict(q_net.state_dict())
        train_seconds += time.perf_counter() - tick
        bar.update(config.num_envs)

        # evaluation: greedy, not timed; early stop when solved
        if evaluator(q_net.greedy, before, step, train_seconds, epsilon=epsilon, loss=loss_value):
            break
    bar.close()
    envs.close()

    evaluator.finish(q_net.greedy, step, train_seconds)
    history["agent"] = q_net
    return history
