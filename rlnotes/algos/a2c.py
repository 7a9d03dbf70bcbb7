"""A2C: advantage actor-critic with a V critic and GAE over parallel envs (Mnih et al. 2016, synchronous).

Introduced in notebook 03. The five-step actor-critic of the notes (`rlnotes.algos.qac`) scores each
action with a learned Q(s, a). A2C makes three changes, each one a variance reduction:

    critic   V(s) instead of Q(s, a): one number per state, regressed on lambda-returns (with the
             default lambda = 1 and 5-step rollouts: n-step returns, n <= 5, bootstrapped from V)
    score    the advantage A = (what happened) - V(s), estimated by GAE:      `advantages.gae`
             delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t),  A_t = sum_k (gamma lam)^k delta_{t+k}
    data     N envs x T steps per update instead of one transition: a batch of B = N T samples

    loss = pg_loss(log pi(a|s), A) + vf_coef * value_loss(V(s), A + V(s)) - ent_coef * entropy

One gradient step per batch; then the data is thrown away (on-policy). PPO (notebook 05) keeps
everything here and changes only the update: several epochs of minibatch steps on a clipped
objective; `diff a2c.py ppo.py` shows exactly that.

Defaults: RL Zoo's CartPole-v1 entry (rl-baselines3-zoo, hyperparams/a2c.yml: n_envs 8, ent_coef 0.0,
n_timesteps 5e5) over Stable-Baselines3's A2C defaults for the rest (n_steps 5, gamma 0.99,
gae_lambda 1.0, vf_coef 0.5, max_grad_norm 0.5, RMSprop with lr 7e-4, alpha 0.99, eps 1e-5, no
advantage normalization, separate 64x64 tanh policy and value networks). Renamed: n_envs -> num_envs,
n_steps -> num_steps, use_rms_prop -> optimizer. We tried num_steps 8 and 16, lambda 0.95, Adam and
lr 1e-3 on 6 seeds: none solved CartPole in clearly fewer steps, so the defaults stay RL Zoo's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rlnotes._checks import check_fields, option
from rlnotes.advantages import gae, normalize
from rlnotes.algos.common import OPTIMIZERS, Evaluator, collect_rollout, episode_flags, make_optimizer, minibatches
from rlnotes.envs import make_vec
from rlnotes.nets import ValueNetwork, flat_size, make_policy
from rlnotes.objectives import explained_variance, pg_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = ["Config", "OPTIMIZERS", "episode_flags", "policy_loss", "train"]


@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete or Box actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(200_000, "budget of env steps, all envs together")
    num_envs: int = option(8, "parallel envs collecting the rollout; typical 4-16")
    num_steps: int = option(5, "steps of each env per rollout (batch = num_envs * num_steps); typical 5-20")
    optimizer: str = option("rmsprop", "rmsprop (alpha 0.99, eps 1e-5, as SB3's A2C) or adam")
    learning_rate: float = option(7e-4, "step size of the optimizer; typical 1e-4 to 1e-3")
    gamma: float = option(0.99, "discount factor in [0, 1]; typical 0.95-0.999")
    gae_lambda: float = option(1.0, "GAE lambda in [0, 1]: 0 the TD error, 1 an n-step return; typical 0.9-1")
    normalize_advantages: bool = option(False, "centre and scale the advantages of each batch")
    bootstrap_truncated: bool = option(True, "bootstrap a time-limit cut from V(final obs); off: the classic bug")
    ent_coef: float = option(0.0, "weight of the entropy bonus, >= 0; typical 0-0.01")
    vf_coef: float = option(0.5, "weight of the value loss; typical 0.25-1")
    max_grad_norm: float = option(0.5, "clip the gradient's global norm to this; typical 0.5-1")
    hidden_size: int = option(64, "units in each hidden layer (policy and critic); typical 32-256")
    hidden_layers: int = option(2, "number of hidden layers (policy and critic); typical 1-3")
    log_std_init: float = option(0.0, "initial log std of a Gaussian policy (Box actions); typical -1 to 0")
    max_episode_steps: int = option(0, "time limit of an episode; 0 keeps the env's own")
    eval_every: int = option(2_048, "env steps between deterministic evaluations (not timed)")
    eval_episodes: int = option(10, "deterministic episodes per evaluation, and in the final one")
    stop_when_solved: bool = option(True, "stop once an evaluation reaches the env's reward_threshold")
    num_threads: int = option(1, "torch.set_num_threads; 1 is fastest for small nets")
    progress_bar: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"a2c.Config: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check_fields(
            self, "a2c.Config",
            at_least_one=(
                "total_steps", "num_envs", "num_steps", "hidden_size", "eval_every", "eval_episodes",
                "num_threads",
            ),
            unit_interval=("gamma", "gae_lambda"),
            positive=("learning_rate", "max_grad_norm"),
            non_negative=("ent_coef", "vf_coef", "hidden_layers", "seed", "max_episode_steps"),
        )

    @property
    def batch_size(self) -> int:
        """Samples per rollout: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def epochs(self) -> int:
        """Passes over each batch: A2C makes one (PPO: several)."""
        return 1

    @property
    def minibatch_size(self) -> int:
        """Samples per gradient step: A2C's one minibatch is the whole batch (PPO: smaller ones)."""
        return self.batch_size

    @property
    def env_kwargs(self) -> dict:
        return {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}


# ---- the policy's loss: the plain policy gradient ------------------------------------------------


def policy_loss(dist, actions, advantages):
    """A2C's policy loss on a minibatch (a scalar to minimize), and the log-probs (B,).

    dist: the current policy's distribution over the B states; actions (B,) or (B, D); advantages (B,).
        pg_loss(log pi(a|s), A)                                      `objectives.pg_loss`
    PPO's `policy_loss` also takes the old policy, to keep the new one near it: that is PPO's idea.
    """
    logp = dist.log_prob(actions)  # (B,)
    return pg_loss(logp, advantages), logp


# ---- the training loop ----------------------------------------------------------------------


STATS = ("entropy", "policy_loss", "value_loss", "grad_norm")  # per gradient step, averaged per update
HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "explained_variance", *STATS,
    "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train A2C; return the history (dict of lists and numbers) plus the trained policy under "agent".

    progress(record) is called after each evaluation with a small dict (step, eval_mean,
    explained_variance, train_seconds). Keys of the history:
        episode_steps, episode_returns         each finished training episode
        update_steps                           env steps at each update (one per rollout), and per update:
          explained_variance                     of the returns by the critic's values at collection time
          entropy, policy_loss, value_loss       on the batch
          grad_norm                              global gradient norm before clipping
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent, value_net                       the trained policy and critic
    """
    # seed
    torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed, **config.env_kwargs)
    obs_size = flat_size(envs.single_observation_space)

    # nets and optimizer: separate policy and critic, one optimizer over both
    hidden = (config.hidden_size,) * config.hidden_layers
    policy = make_policy(envs.single_observation_space, envs.single_action_space, hidden, nn.Tanh, config.log_std_init)
    value_net = ValueNetwork(obs_size, hidden, nn.Tanh)
    params = list(policy.parameters()) + list(value_net.parameters())
    optimizer = make_optimizer(config.optimizer, params, config.learning_rate)

    # storage
    history = {key: [] for key in HISTORY_KEYS}

    obs, _ = envs.reset(seed=config.seed)
    step, train_seconds = 0, 0.0
    bar = tqdm(total=config.total_steps, desc="a2c", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout: num_steps steps of every env, no gradient
        rollout, obs = collect_rollout(envs, policy, value_net, obs, config.num_steps)
        before, step = step, step + config.batch_size
        for ret in rollout.episode_returns:
            history["episode_steps"].append(step)
            history["episode_returns"].append(ret)

        # bootstrap and advantages: GAE, termination and truncation kept apart
        terminated, truncated = episode_flags(rollout.terminated, rollout.truncated, config.bootstrap_truncated)
        with torch.no_grad():
            advantages, returns = gae(rollout.rewards, rollout.values, rollout.next_values, terminated, truncated,
                                      config.gamma, config.gae_lambda)  # (T, N)

        # flatten (T, N) -> (B,)
        batch = rollout.flat()
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)

        # epochs of minibatches (A2C: one epoch of one minibatch, the whole batch; PPO: several of each)
        stats = {key: [] for key in STATS}
        for rows in minibatches(config.batch_size, config.minibatch_size, config.epochs, generator):
            mb_advantages = advantages[rows]
            if config.normalize_advantages and len(rows) > 1:
                mb_advantages = normalize(mb_advantages)
            dist = policy(batch["obs"][rows])
            pi_loss, logp = policy_loss(dist, batch["actions"][rows], mb_advantages)
            entropy = dist.entropy().mean()
            v_loss = value_loss(value_net(batch["obs"][rows]), returns[rows])
            loss = pi_loss - config.ent_coef * entropy + config.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            stats["entropy"].append(entropy.item())
            stats["policy_loss"].append(pi_loss.item())
            stats["value_loss"].append(v_loss.item())
            stats["grad_norm"].append(grad_norm.item())

        # diagnostics: how good is the critic
        history["update_steps"].append(step)
        history["explained_variance"].append(float(explained_variance(batch["values"], returns)))
        for key, values in stats.items():
            history[key].append(float(np.mean(values)))
        train_seconds += time.perf_counter() - tick
        bar.update(config.batch_size)

        # evaluation (not timed), early stop when solved
        if evaluator(policy.deterministic, before, step, train_seconds,
                     explained_variance=history["explained_variance"][-1]):
            break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history.update(agent=policy, value_net=value_net)
    return history
