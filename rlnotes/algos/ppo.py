"""PPO: several epochs of minibatch steps on one batch, kept near the old policy (Schulman et al. 2017).

Introduced in notebook 05. TRPO (notebook 04) solves a constrained problem for one careful step per
batch. PPO keeps plain first-order minibatch steps with Adam, and changes the objective instead, so
that moving far from the policy that collected the data stops paying off. Two variants (`variant`):

    clip   L = mean(min(r A, clip(r, 1 - eps, 1 + eps) A))       `objectives.clipped_surrogate`
    kl     L = mean(r A) - beta * mean(KL(pi_old || pi))          `objectives.surrogate_loss`, exact KL
           with beta adapted after each update by the paper's d_targ rule  `divergences.AdaptiveKL`

The rest is the actor-critic machinery of notebook 03: GAE advantages, a value loss (optionally
clipped), an entropy bonus, gradient-norm clipping, a linearly annealed learning rate.

Defaults: RL Zoo's tuned PPO hyperparameters for CartPole-v1 (rl-baselines3-zoo, hyperparams/ppo.yml:
n_envs 8, n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0,
learning_rate lin_0.001, clip_range lin_0.2, n_timesteps 1e5) with Stable-Baselines3's PPO defaults
for the rest (vf_coef 0.5, max_grad_norm 0.5, normalize_advantage True, no value clipping; separate
64x64 tanh policy and value networks, Adam eps 1e-5 as SB3's ActorCriticPolicy), then three changes
measured on CartPole-v1 (24 seeds, solved = 10 deterministic episodes averaging >= 475, evaluated
every 2,048 steps): n_epochs 20 -> 10, learning_rate 1e-3 -> 3e-3 (still annealed), gae_lambda
0.8 -> 0.95 (the common PPO default). RL Zoo's values solve in a median of about 16,000 env steps and
1,250 gradient steps; these in about 8,000 env steps and 330 gradient steps, every seed within
21,000 steps. Renamed: n_envs -> num_envs, n_steps -> num_steps, batch_size -> minibatch_size,
n_epochs -> epochs, clip_range -> clip_eps (lin_ -> anneal_clip), lin_ learning rate -> anneal_lr,
clip_range_vf -> value_clip. The KL variant's d_targ 0.01 and initial beta 1 are from the paper
(sec. 4 and 6.1). For Pendulum-v1, `PRESETS["Pendulum-v1"]` (see there).
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
from rlnotes.algos.common import (
    OPTIMIZERS,
    Evaluator,
    collect_rollout,
    episode_flags,
    freeze_distribution,
    make_optimizer,
    minibatches,
    policy_kl,
)
from rlnotes.divergences import AdaptiveKL, kl_estimate
from rlnotes.envs import make_vec
from rlnotes.nets import ValueNetwork, flat_size, make_policy
from rlnotes.objectives import clip_fraction, clipped_surrogate, explained_variance, surrogate_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = ["Config", "PRESETS", "VARIANTS", "policy_loss", "train"]

VARIANTS = ("clip", "kl")


@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete or Box actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(100_000, "budget of env steps, all envs together")
    variant: str = option("clip", "clip: the clipped surrogate; kl: surrogate - beta * KL, adaptive beta")
    num_envs: int = option(8, "parallel envs collecting the rollout; typical 1-64")
    num_steps: int = option(32, "steps of each env per rollout (batch = num_envs * num_steps); typical 32-2048")
    epochs: int = option(10, "passes over each batch; typical 3-20")
    minibatch_size: int = option(256, "samples per gradient step; typical 32-512")
    optimizer: str = option("adam", "adam (eps 1e-5, as SB3's PPO) or rmsprop")
    learning_rate: float = option(3e-3, "step size (at the start, if annealed); typical 1e-4 to 3e-3")
    anneal_lr: bool = option(True, "decay the learning rate linearly to 0 over total_steps")
    clip_eps: float = option(0.2, "clip variant: the ratio is clipped to [1 - eps, 1 + eps]; typical 0.1-0.3")
    anneal_clip: bool = option(True, "clip variant: decay clip_eps linearly over total_steps")
    kl_target: float = option(0.01, "kl variant: d_targ, the KL per update that beta aims at; typical 0.003-0.03")
    kl_init_beta: float = option(1.0, "kl variant: the starting beta (the paper's 1)")
    gamma: float = option(0.98, "discount factor in [0, 1]; typical 0.95-0.999")
    gae_lambda: float = option(0.95, "GAE lambda in [0, 1]; typical 0.9-0.99")
    normalize_advantages: bool = option(True, "centre and scale the advantages of each minibatch")
    bootstrap_truncated: bool = option(True, "bootstrap a time-limit cut from V(final obs); off: the classic bug")
    ent_coef: float = option(0.0, "weight of the entropy bonus, >= 0; typical 0-0.01")
    vf_coef: float = option(0.5, "weight of the value loss; typical 0.25-1")
    value_clip: float = option(0.0, "clip the value change to +- this around the old values; 0 is off")
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
        if self.variant not in VARIANTS:
            raise ValueError(f"ppo.Config: variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"ppo.Config: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check_fields(
            self, "ppo.Config",
            at_least_one=(
                "total_steps", "num_envs", "num_steps", "epochs", "minibatch_size", "hidden_size",
                "eval_every", "eval_episodes", "num_threads",
            ),
            unit_interval=("gamma", "gae_lambda"),
            positive=("learning_rate", "clip_eps", "kl_target", "kl_init_beta", "max_grad_norm"),
            non_negative=("ent_coef", "vf_coef", "value_clip", "hidden_layers", "seed", "max_episode_steps"),
        )

    @property
    def batch_size(self) -> int:
        """Samples per rollout: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def env_kwargs(self) -> dict:
        return {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}


# Hyperparameters for other tasks: ppo.Config(**PRESETS["Pendulum-v1"], seed=...), or on the command line
#   rlnotes train ppo --env Pendulum-v1 --total-steps 100000 --num-envs 4 --num-steps 1024 --epochs 10 \
#       --minibatch-size 64 --no-anneal-clip --gamma 0.9 --gae-lambda 0.95
# Pendulum-v1: RL Zoo's tuned values (hyperparams/ppo.yml: n_envs 4, n_steps 1024, gae_lambda 0.95, gamma 0.9,
# n_epochs 10, learning_rate 1e-3, clip_range 0.2 constant, n_timesteps 1e5; batch_size 64 is SB3's default)
# without gSDE (use_sde), which rlnotes does not have. The learning rate is annealed (rlnotes' default; the zoo
# keeps it constant): with it, 3 seeds end at -178, -171 and -200 after 1e5 steps.
PRESETS = {
    "CartPole-v1": {},
    "Pendulum-v1": {
        "env": "Pendulum-v1", "total_steps": 100_000, "num_envs": 4, "num_steps": 1024, "epochs": 10,
        "minibatch_size": 64, "learning_rate": 1e-3, "anneal_clip": False, "gamma": 0.9, "gae_lambda": 0.95,
    },
}


# ---- the policy's loss: the idea of PPO ---------------------------------------------------------


def policy_loss(dist, old_dist, actions, old_logp, advantages, variant="clip", clip_eps=0.2, beta=1.0):
    """PPO's policy loss on a minibatch (a scalar to minimize), and the new log-probs (B,).

    dist: the current policy's distribution over the B states; old_dist: pi_old's (`freeze_distribution`),
    needed by the kl variant; actions (B,) or (B, D); old_logp, advantages (B,).
        clip:  mean(clipped_surrogate(logp, old_logp, A, clip_eps))
        kl:    mean(surrogate_loss(logp, old_logp, A)) + beta * mean(KL(pi_old || pi))   (exact KL per state)
    """
    if variant not in VARIANTS:
        raise ValueError(f"policy_loss: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    logp = dist.log_prob(actions)  # (B,)
    if variant == "clip":
        return clipped_surrogate(logp, old_logp, advantages, eps=clip_eps).mean(), logp
    return surrogate_loss(logp, old_logp, advantages).mean() + beta * policy_kl(old_dist, dist).mean(), logp


# ---- the training loop ----------------------------------------------------------------------


STATS = ("clip_fraction", "entropy", "policy_loss", "value_loss", "grad_norm")  # per gradient step, averaged per update
HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "approx_kl", "approx_kl_k1", "kl", "explained_variance", *STATS,
    "beta", "learning_rate", "clip_eps", "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train PPO; return the history (dict of lists and numbers) plus the trained policy under "agent".

    progress(record) is called after each evaluation with a small dict (step, eval_mean, approx_kl,
    beta, train_seconds). Keys of the history:
        episode_steps, episode_returns         each finished training episode
        update_steps                           env steps at each update (one per rollout), and per update:
          approx_kl, approx_kl_k1                k3 and k1 sample estimates of KL(pi_old || pi_new) on the batch
          kl                                     the exact mean KL(pi_old || pi_new) on the batch's states
          clip_fraction                          ratios outside [1 - eps, 1 + eps], mean over the minibatches
                                                 (kl variant: eps = clip_eps, not annealed, for comparison)
          explained_variance                     of the returns by the critic's values at collection time
          entropy, policy_loss, value_loss       means over the minibatches
          grad_norm                              mean global gradient norm before clipping
          beta, learning_rate, clip_eps          the coefficients used in this update (beta: kl variant)
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
    adaptive = AdaptiveKL(config.kl_target, config.kl_init_beta)

    # storage
    history = {key: [] for key in HISTORY_KEYS}

    obs, _ = envs.reset(seed=config.seed)
    step, train_seconds = 0, 0.0
    bar = tqdm(total=config.total_steps, desc=f"ppo-{config.variant}", unit="step", disable=not config.progress_bar)
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
        with torch.no_grad():  # PPO: pi_old is frozen as data
            old_dist = freeze_distribution(policy(batch["obs"]))

        # PPO's schedules: linear decay over the budget not yet spent when this update starts
        remaining = 1.0 - before / config.total_steps
        lr = config.learning_rate * (remaining if config.anneal_lr else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        clip_eps = config.clip_eps * (remaining if config.anneal_clip and config.variant == "clip" else 1.0)
        beta = adaptive.beta

        # epochs of minibatches (A2C: one epoch of one minibatch, the whole batch; PPO: several of each)
        stats = {key: [] for key in STATS}
        for rows in minibatches(config.batch_size, config.minibatch_size, config.epochs, generator):
            mb_advantages = advantages[rows]
            if config.normalize_advantages and len(rows) > 1:
                mb_advantages = normalize(mb_advantages)
            dist = policy(batch["obs"][rows])
            # batch["logp"]: the old log-probs, recorded by collect_rollout under no_grad (data, no gradient)
            pi_loss, logp = policy_loss(dist, freeze_distribution(old_dist, rows), batch["actions"][rows],
                                        batch["logp"][rows], mb_advantages, config.variant, clip_eps, beta)
            entropy = dist.entropy().mean()
            v_loss = value_loss(value_net(batch["obs"][rows]), returns[rows], batch["values"][rows],
                                config.value_clip if config.value_clip > 0 else None)
            loss = pi_loss - config.ent_coef * entropy + config.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            stats["clip_fraction"].append(clip_fraction(logp, batch["logp"][rows], clip_eps).item())
            stats["entropy"].append(entropy.item())
            stats["policy_loss"].append(pi_loss.item())
            stats["value_loss"].append(v_loss.item())
            stats["grad_norm"].append(grad_norm.item())

        # diagnostics: how good is the critic; PPO: how far did the policy move
        history["update_steps"].append(step)
        history["explained_variance"].append(float(explained_variance(batch["values"], returns)))
        for key, values in stats.items():
            history[key].append(float(np.mean(values)))
        with torch.no_grad():
            new_dist = policy(batch["obs"])
            new_logp = new_dist.log_prob(batch["actions"])
            kl = float(policy_kl(old_dist, new_dist).mean())
        if config.variant == "kl":
            adaptive.update(kl)  # the d_targ rule: beta x2 above 1.5 d_targ, /2 below d_targ / 1.5
        history["approx_kl"].append(float(kl_estimate(batch["logp"], new_logp, "k3").mean()))
        history["approx_kl_k1"].append(float(kl_estimate(batch["logp"], new_logp, "k1").mean()))
        history["kl"].append(kl)
        history["beta"].append(beta)
        history["learning_rate"].append(lr)
        history["clip_eps"].append(clip_eps)
        train_seconds += time.perf_counter() - tick
        bar.update(config.batch_size)

        # evaluation (not timed), early stop when solved
        if evaluator(policy.deterministic, before, step, train_seconds, approx_kl=history["approx_kl"][-1],
                     beta=adaptive.beta):
            break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history.update(agent=policy, value_net=value_net)
    return history
