"""The notes' five-step actor-critic, literally: a policy (actor) scored by a learned Q(s, a) (critic).

Introduced in notebook 03. Both the policy pi(a|s; theta) and the action value q(s, a; w) are
networks. Every step of every env runs the notes' five steps:

    1. sample a ~ pi(.|s)                                  (the actor chooses)
    2. execute a; observe r and s'                         (the environment answers)
    3. sample a' ~ pi(.|s'), NOT executed                  (only to value s' under the policy)
    4. TD update of the critic: q(s, a) towards r + gamma (1 - terminated) q(s', a')      (descent on w)
    5. policy update scored by the critic: ascend q(s, a) * grad log pi(a|s)             (ascent on theta)

Step 4 is SARSA's target (notebook 01) with a network. Step 5 scores the actor with the critic just
updated in step 4 (the notes' flow can also be read as computing q_t before that update; both
orders are valid, they differ by one small critic step). a' is never executed: the next pass samples
a fresh action in s'.

The critic improves because its targets contain a real reward; the policy improves because the critic
tells it which actions look good. When training ends, the policy is what we keep: it acts alone, the
critic was scaffolding.

`Config.score` chooses step 5's score: "q" is the notes' q(s, a); "advantage" subtracts the same
critic's value of the state, v(s) = sum_a pi(a|s) q(s, a), a baseline (notebook 02) that leaves the
expected update unchanged and removes the part of q that every action shares. Everything else stays
the same, so the two runs compare the score alone. A2C (`rlnotes.algos.a2c`) goes further: a V critic
and GAE advantages.

Hyperparameters: chosen for this course (no reference implementation of the plain Q actor-critic has
tuned ones): the network sizes of `a2c`, Adam, a critic that learns faster than the actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rlnotes._checks import check_fields, option
from rlnotes.advantages import td_target
from rlnotes.algos.common import Evaluator, env_actions
from rlnotes.envs import final_next_obs, make_vec
from rlnotes.nets import QCritic, make_policy
from rlnotes.objectives import pg_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = ["Config", "SCORES", "q_advantage", "critic_advantage", "five_steps", "train"]

SCORES = ("q", "advantage")


@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete or Box actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(100_000, "budget of env steps, all envs together")
    num_envs: int = option(16, "parallel envs, each runs the five steps; one update per step of all; typical 1-16")
    actor_learning_rate: float = option(3e-4, "Adam step size of the policy (step 5); typical 1e-4 to 1e-3")
    critic_learning_rate: float = option(3e-3, "Adam step size of the Q critic (step 4); typical 1e-3 to 1e-2")
    gamma: float = option(0.99, "discount factor in [0, 1]; typical 0.95-0.999")
    score: str = option("q", "step 5's score: q (the notes' q(s, a)) or advantage (q(s, a) - v(s))")
    hidden_size: int = option(64, "units in each hidden layer (policy and critic); typical 32-256")
    hidden_layers: int = option(2, "number of hidden layers (policy and critic); typical 1-3")
    log_std_init: float = option(0.0, "initial log std of a Gaussian policy (Box actions); typical -1 to 0")
    max_grad_norm: float = option(0.5, "clip each network's gradient norm to this; typical 0.5-1")
    eval_every: int = option(2_048, "env steps between deterministic evaluations (not timed)")
    eval_episodes: int = option(10, "deterministic episodes per evaluation, and in the final one")
    stop_when_solved: bool = option(True, "stop once an evaluation reaches the env's reward_threshold")
    num_threads: int = option(1, "torch.set_num_threads; 1 is fastest for small nets")
    progress_bar: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        check_fields(
            self, "qac.Config",
            at_least_one=("total_steps", "num_envs", "hidden_size", "eval_every", "eval_episodes", "num_threads"),
            unit_interval=("gamma",),
            positive=("actor_learning_rate", "critic_learning_rate", "max_grad_norm"),
            non_negative=("hidden_layers", "seed"),
        )
        if self.score not in SCORES:
            raise ValueError(f"qac.Config: score must be one of {', '.join(SCORES)}, got {self.score!r}")


def q_advantage(q_values: torch.Tensor, probs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """q(s, a) - sum_a' pi(a'|s) q(s, a'): the critic's score of the taken action minus its own value of s.

    q_values: (N, A), q(s, a') for every action; probs: (N, A), pi(.|s); actions: (N,) long -> (N,).
    Subtracting v(s) is a baseline: it depends on the state only, so the expected policy update is
    unchanged, but what all actions share (in CartPole, a large positive q) no longer pushes every
    sampled action up.
    """
    if q_values.dim() != 2 or probs.shape != q_values.shape or actions.shape != q_values.shape[:1]:
        raise ValueError(f"q_advantage: q_values and probs must be (N, A) and actions (N,), got "
                         f"{tuple(q_values.shape)}, {tuple(probs.shape)}, {tuple(actions.shape)}")
    taken = q_values.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (N, A) -> (N,)
    return taken - (probs * q_values).sum(-1)


@torch.no_grad()
def critic_advantage(critic, dist, obs: torch.Tensor, actions: torch.Tensor, samples: int = 16) -> torch.Tensor:
    """q(s, a) - v(s) with v(s) = E_{a' ~ pi(.|s)}[q(s, a')], all from the critic; (N,).

    Discrete actions: every action's q, then `q_advantage` (exact). Box actions: v(s) is the mean of q
    over `samples` fresh draws of pi(.|s) (an estimate that does not depend on the action taken).
    """
    N = obs.shape[0]
    if critic.discrete:
        A = critic.action_size
        q_all = critic(obs.repeat_interleave(A, 0), torch.arange(A).repeat(N)).reshape(N, A)  # (N A,) -> (N, A)
        return q_advantage(q_all, dist.probs, actions)
    draws = dist.sample((samples,))  # (K, N, D)
    q_draws = critic(obs.expand(samples, *obs.shape).reshape(samples * N, -1), draws.reshape(samples * N, -1))  # (K N,)
    return critic(obs, actions) - q_draws.reshape(samples, N).mean(0)


def five_steps(envs, obs: np.ndarray, policy, critic, actor_optimizer, critic_optimizer, gamma: float,
               max_grad_norm: float = float("inf"), score: str = "q"):
    """One pass of the five steps in every env of `envs` (one transition each, N in all).

    obs: the current observations (N, obs_size). Returns (next_obs, info, stats) where stats has the
    batch's mean q(s, a), TD error and the two losses. The critic learns first (step 4), then the
    actor is scored by the critic it just updated (step 5). score: "q" scores the action by q(s, a),
    "advantage" by q(s, a) - v(s) with v from the same critic (`critic_advantage`).
    """
    if score not in SCORES:
        raise ValueError(f"five_steps: score must be one of {', '.join(SCORES)}, got {score!r}")
    obs_t = torch.as_tensor(obs, dtype=torch.float32)  # (N, obs_size)

    # 1. sample a ~ pi(.|s)
    actions = policy.sample(obs_t)  # (N,) or (N, D), no gradient

    # 2. execute a; observe r and s'
    next_obs, rewards, terminated, truncated, info = envs.step(env_actions(actions, envs.single_action_space))
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    terminated = torch.as_tensor(terminated)
    true_next = torch.as_tensor(final_next_obs(next_obs, info), dtype=torch.float32)  # s' of the episode that just ended,
    # not the next episode's first observation (SAME_STEP autoreset has already put that in next_obs)

    # 3. sample a' ~ pi(.|s'), not executed: it only says how s' is valued under the current policy
    #    (the next pass samples its own, fresh action in s')
    next_actions = policy.sample(true_next)

    # 4. TD update of the critic, SARSA's target: q(s, a) -> r + gamma (1 - terminated) q(s', a')
    #    (truncation IS bootstrapped)
    with torch.no_grad():
        targets = td_target(rewards, critic(true_next, next_actions), terminated, gamma)  # (N,)
    q = critic(obs_t, actions)  # (N,)
    critic_loss = value_loss(q, targets)
    critic_optimizer.zero_grad()
    critic_loss.backward()
    torch.nn.utils.clip_grad_norm_(critic.parameters(), max_grad_norm)
    critic_optimizer.step()

    # 5. policy update scored by the critic just updated: ascend score * log pi(a|s)  (pg_loss is its negative)
    dist = policy(obs_t)
    with torch.no_grad():
        if score == "advantage":
            scores = critic_advantage(critic, dist, obs_t, actions)  # (N,): q(s, a) - v(s)
        else:
            scores = critic(obs_t, actions)  # (N,): q(s, a)
    actor_loss = pg_loss(dist.log_prob(actions), scores)
    actor_optimizer.zero_grad()
    actor_loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    actor_optimizer.step()

    stats = {"q_mean": q.mean().item(), "td_error": (targets - q.detach()).abs().mean().item(),
             "critic_loss": critic_loss.item(), "actor_loss": actor_loss.item()}
    return next_obs, info, stats


# ---- the training loop ----------------------------------------------------------------------


HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "q_mean", "td_error", "critic_loss", "actor_loss",
    "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train the five-step Q actor-critic; return the history plus the trained policy under "agent".

    progress(record) is called after each evaluation with a small dict (step, eval_mean, q_mean,
    train_seconds). Keys of the history:
        episode_steps, episode_returns         each finished training episode
        update_steps, q_mean, td_error, critic_loss, actor_loss     means over each eval period
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent, critic                          the trained policy (what we keep) and the Q critic
    """
    # seed
    torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed)

    # nets and optimizers: the actor pi(a|s; theta) and the critic q(s, a; w), each with its own Adam
    hidden = (config.hidden_size,) * config.hidden_layers
    policy = make_policy(envs.single_observation_space, envs.single_action_space, hidden, nn.Tanh, config.log_std_init)
    critic = QCritic.for_spaces(envs.single_observation_space, envs.single_action_space, hidden, nn.Tanh)
    actor_optimizer = torch.optim.Adam(policy.parameters(), lr=config.actor_learning_rate)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_learning_rate)

    # storage
    history = {key: [] for key in HISTORY_KEYS}
    period = {key: [] for key in ("q_mean", "td_error", "critic_loss", "actor_loss")}

    obs, _ = envs.reset(seed=config.seed)
    step, train_seconds = 0, 0.0
    bar = tqdm(total=config.total_steps, desc="qac", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout and update: the five steps, in every env at once (one transition each, then both updates)
        next_obs, info, stats = five_steps(envs, obs, policy, critic, actor_optimizer, critic_optimizer, config.gamma,
                                           config.max_grad_norm, config.score)
        obs = next_obs  # continue from the reset observation where an episode ended
        before, step = step, step + config.num_envs
        for i in np.flatnonzero(info.get("_episode", [])):
            history["episode_steps"].append(step)
            history["episode_returns"].append(float(info["episode"]["r"][i]))
        for key, value in stats.items():
            period[key].append(value)
        train_seconds += time.perf_counter() - tick
        bar.update(config.num_envs)

        # diagnostics: the means over the eval period, at each evaluation
        if evaluator.due(before, step):
            history["update_steps"].append(step)
            for key, values in period.items():
                history[key].append(float(np.mean(values)))
                values.clear()

            # evaluation (not timed), early stop when solved
            if evaluator(policy.deterministic, before, step, train_seconds, q_mean=history["q_mean"][-1]):
                break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history.update(agent=policy, critic=critic)
    return history
