"""RLHF's third stage: PPO on the language model against a learned reward model, with a KL-shaped reward.

Introduced in ``08_rlhf`` (Stiennon et al. 2020, arXiv:2009.01325, sec. 3.4; Ouyang et al. 2022,
"InstructGPT", arXiv:2203.02155, sec. 3.5). The three stages: SFT (``sft``), a reward model learned
from an annotator's rankings (``reward_model``), then this module. It reads in the order of
``rlnotes.algos.ppo`` (chapter 05) and of ``grpo`` (chapter 07); what differs from GRPO:

    GRPO (07)                                   RLHF (here)
    verifiable reward                           a LEARNED reward model r_phi(x, y): it can be fooled
    group baseline, one advantage per answer    a critic V(prefix) and GAE over tokens (chapter 03)
    beta * k3 KL inside the loss                beta * KL estimate inside the REWARD, per token

The per-token reward of answer y (``shaped_rewards``), with t = 1..|y|:

    R_t = -beta * kl_estimate(log pi_old(y_t), log pi_ref(y_t))   on every token
          + r_phi(x, y) - no_eos_penalty * [y has no EOS]          added on the last token

then GAE with gamma = 1 over the tokens of the answer (``token_advantages``), advantages whitened over
the batch's tokens, and epochs of the clipped surrogate (``objectives.clipped_surrogate``) for the
policy and the clipped value loss (``objectives.value_loss``) for the critic. The KL coefficient is
fixed, or adapted to a target KL per answer by one of two rules (``kl_controller``):

    "ppo"           the PPO paper's doubling rule (Schulman et al. 2017, sec. 4; ``divergences.AdaptiveKL``,
                    the notes' adaptive KL): beta x2 above 1.5 x target, /2 below target / 1.5;
    "proportional"  Ziegler et al. 2019's proportional controller (arXiv:1909.08593, sec. 2.2;
                    ``divergences.ProportionalKL``), the rule of TRL 0.x's PPO trainer:
                    beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * answers / kl_horizon.

Temperature: the rollout is sampled at ``temperature`` and the policy (at collection and in the update)
and pi_ref are all scored at it (``logprobs.sequence_logprobs``), as TRL divides every model's logits by
it; the KL in the reward and the KL fed to the controller compare the two tempered distributions. The
policy and the critic have their dropout turned off (``model.disable_dropout``, TRL's ``disable_dropout``).

Defaults (a reward model of 900 steps on 4000 ranked prompts; 64 prompts x 4 answers a rollout, 2 epochs of
4 minibatches, lr 1.5e-4, critic lr 1e-3, beta 0.15, k1 in the reward, lambda 0.95, 400 iterations) chosen
on seed 4 only, measured on held-out prompts after PPO from a 1300-step SFT model:

    reward model       PPO                                 sampled    greedy   RM + PPO seconds
    300 steps, 2000    lr 1e-4,   beta 0.1,  400 its        +23.7      -2.2     8 + 120
    300 steps, 2000    lr 1e-4,   beta 0.2,  500 its        +25.5      -1.4     8 + 170
    900 steps, 4000    lr 1e-4,   beta 0.1,  400 its        +24.4      -0.6     25 + 138
    900 steps, 4000    lr 1e-4,   beta 0.05, 400 its        +21.0      -5.3     25 + 127
    900 steps, 4000    lr 1.5e-4, beta 0.1,  450 its        +25.4      -1.4     25 + 150
    900 steps, 4000    lr 1.5e-4, beta 0.15, 450 its        +25.8      -0.7     25 + 156

(one thread each, two such jobs on a 2-core machine). The greedy loss follows the reward model's
errors more than PPO's settings: a better reward model (900 steps on twice the prompts) halved it.
Chapter 08 and the closing note of issue 13 report the defaults on other seeds.

Why the no-EOS penalty: an answer cut at the generation budget gets the reward model's score like any
other, and the reward model has seen few such answers, so its score there is arbitrary. Without a
penalty, never stopping can become the best move. TRL's ``missing_eos_penalty`` is the same idea.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from rlnotes._checks import check_fields
from rlnotes.advantages import gae, normalize
from rlnotes.divergences import KL_ESTIMATORS, AdaptiveKL, ProportionalKL, kl_estimate
from rlnotes.objectives import aggregate, clip_fraction, clipped_surrogate, explained_variance, value_loss
from rlnotes.utils import seed_everything

from . import reward_model as rm_module
from . import sft
from .logprobs import sequence_logprobs
from .model import disable_dropout
from .rollout import collect, kl_to_reference, subset_pairs
from .sampling import evaluate, sample
from .task import AdditionTask

__all__ = ["KL_CONTROLLERS", "Config", "ValueModel", "shaped_rewards", "token_advantages", "completion_slice", "train"]

KL_CONTROLLERS = ("ppo", "proportional")  # the adaptive rules of beta: divergences.AdaptiveKL, divergences.ProportionalKL


@dataclass
class Config:
    seed: int = field(default=1,
                      metadata={"help": "seed of the SFT model and reward model (if trained here), sampling, training"})
    sft_steps: int = field(default=1300, metadata={"help": "SFT steps when no reference model is given (`rlnotes lm rlhf`)"})
    rm_steps: int = field(default=900, metadata={"help": "reward-model steps when no reward model is given"})
    rm_train_prompts: int = field(default=4000,
                                  metadata={"help": "training prompts the annotator ranks K answers of (0: all 8000)"})
    iterations: int = field(default=400, metadata={"help": "rollouts, each followed by epochs x minibatches updates"})
    prompts_per_iteration: int = field(default=64, metadata={"help": "training prompts a rollout; 32 to 128"})
    samples_per_prompt: int = field(default=4, metadata={"help": "answers sampled per prompt; 1 to 8"})
    epochs: int = field(default=2, metadata={"help": "passes over each rollout (PPO's epochs); 1 to 4"})
    minibatches: int = field(default=4, metadata={"help": "minibatches an epoch is split into (answers, not tokens); 1 to 8"})
    learning_rate: float = field(default=1.5e-4, metadata={"help": "policy Adam step size; 1e-5 to 3e-4"})
    critic_learning_rate: float = field(default=1e-3, metadata={"help": "critic Adam step size; 1e-4 to 3e-3"})
    beta: float = field(default=0.15,
                        metadata={"help": "KL coefficient in the per-token reward (initial, if adaptive); 0 to 0.3"})
    kl_kind: str = field(default="k1", metadata={"help": "KL estimator in the reward: k1 (InstructGPT, TRL), k2 or k3"})
    adaptive_kl: bool = field(default=False, metadata={"help": "adapt beta to kl_target with the rule of kl_controller"})
    kl_controller: str = field(default="ppo",
                               metadata={"help": "adaptive rule: ppo (x2 or /2, Schulman 2017) or proportional (Ziegler 2019)"})
    kl_target: float = field(default=0.2, metadata={"help": "target KL per answer (nats) of the adaptive rule"})
    kl_horizon: float = field(default=10000.0,
                              metadata={"help": "proportional rule: beta *= 1 + error * answers / kl_horizon"})
    gamma: float = field(default=1.0, metadata={"help": "discount over tokens; 1 (an answer is short)"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda over tokens; 0.9 to 1"})
    clip_eps: float = field(default=0.2, metadata={"help": "clip range of the ratio, 1 +- eps; 0.1 to 0.3"})
    value_clip: float = field(default=0.2, metadata={"help": "clip range of the critic's change (0: no value clipping)"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalize advantages over the batch's tokens"})
    no_eos_penalty: float = field(default=1.0, metadata={"help": "subtracted from the score of an answer without EOS; >= 0"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; every model scores the rollout at it (TRL)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "global gradient-norm clip of each network; 0: none"})
    eval_every: int = field(default=25, metadata={"help": "iterations between held-out evaluations (not timed)"})
    eval_prompts: int = field(default=0, metadata={"help": "held-out prompts of the final accuracies (0: all 2000)"})
    eval_samples: int = field(default=4, metadata={"help": "answers sampled per held-out prompt for sampled accuracy"})
    probe_prompts: int = field(default=500, metadata={"help": "held-out prompts of the periodic evaluations"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for this tiny model"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        check_fields(self, "rlhf.Config",
                     at_least_one=("sft_steps", "rm_steps", "iterations", "prompts_per_iteration", "samples_per_prompt",
                                   "epochs", "minibatches", "eval_every", "eval_samples", "probe_prompts", "num_threads"),
                     unit_interval=("gamma", "lam"),
                     positive=("learning_rate", "critic_learning_rate", "clip_eps", "temperature", "kl_target", "kl_horizon"),
                     non_negative=("seed", "rm_train_prompts", "beta", "value_clip", "no_eos_penalty", "max_grad_norm",
                                   "eval_prompts"))
        if self.adaptive_kl and not self.beta > 0:
            raise ValueError(f"rlhf.Config: adaptive_kl needs an initial beta > 0, got {self.beta}")
        if self.kl_controller not in KL_CONTROLLERS:
            raise ValueError(f"rlhf.Config: kl_controller must be one of {', '.join(KL_CONTROLLERS)}, "
                             f"got {self.kl_controller!r}")
        if self.kl_kind not in KL_ESTIMATORS:
            raise ValueError(f"rlhf.Config: kl_kind must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_kind!r}")


# ---- the critic ----------------------------------------------------------------------------------------


class ValueModel(nn.Module):
    """The critic: a copy of the SFT model whose unembedding (C -> V) is replaced by a scalar head (C -> 1).

    ``critic(tokens (M, L)) -> (M, L - 1)``: the value of every prefix ``tokens[:, :t + 1]``, aligned with
    the per-token log-probs of ``logprobs.sequence_logprobs`` (position t is the state in which token
    t + 1 is chosen). A separate network from the policy, as in the prototype this chapter follows; the
    head starts at 0, so the first values are 0 (the reward model's scores are centred on 0 too).
    """

    def __init__(self, sft_model):
        super().__init__()
        self.body = copy.deepcopy(sft_model)
        self.body.lm_head = nn.Linear(self.body.config.n_embd, 1)
        nn.init.zeros_(self.body.lm_head.weight)
        nn.init.zeros_(self.body.lm_head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(tokens[:, :-1]).squeeze(-1)  # (M, L - 1, 1) -> (M, L - 1)


# ---- the formulas of the third stage ----------------------------------------------------------------------


def completion_slice(per_position: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """The columns of a (M, L - 1) per-position tensor that score the answer's N tokens -> (M, N).

    With prompts of fixed length P, position P - 1 chooses the answer's first token, so the answer's
    tokens are columns P - 1 ... L - 2 (``sequence_logprobs``'s shift).
    """
    return per_position[:, prompt_len - 1 :]


def shaped_rewards(scores, logp, ref_logp, mask, beta: float, kind: str = "k1"):
    """The per-token reward of RLHF: a KL penalty on every token, the score on the last one -> (M, N).

    Args:
        scores: (M,) one number per answer (the reward model's score, minus any no-EOS penalty).
        logp, ref_logp: (M, N) log-probs of the answer's tokens under the sampling policy and pi_ref.
        mask: (M, N) bool, True on the answer's tokens up to and including EOS (a prefix of each row,
            at least one True).
        beta: >= 0, the KL coefficient; kind: the estimator of ``divergences.kl_estimate``.
    Returns (M, N): ``-beta * kl_estimate(logp, ref_logp, kind)`` where mask is True, plus ``scores`` at
    each row's last True position; exactly 0 where mask is False (even if the inputs there are not
    finite). Source: Ziegler et al. 2019 (arXiv:1909.08593) eq. 2; TRL's PPOTrainer builds the same.
    Raises ValueError for mismatched shapes, a row with no True, beta < 0, or a NaN score (RLHF has no
    group to leave an unscorable answer out of: the reward function must score every answer).
    """
    if logp.shape != ref_logp.shape or logp.shape != mask.shape or logp.dim() != 2 or scores.shape != logp.shape[:1]:
        raise ValueError(f"shaped_rewards: scores (M,) and logp, ref_logp, mask (M, N) expected, got {tuple(scores.shape)}, "
                         f"{tuple(logp.shape)}, {tuple(ref_logp.shape)}, {tuple(mask.shape)}")
    if not beta >= 0:
        raise ValueError(f"shaped_rewards: beta must be >= 0, got {beta}")
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"shaped_rewards: scores hold NaN for {int(torch.isnan(scores).sum())} of {len(scores)} answers")
    lengths = mask.sum(-1)  # (M,)
    if bool((lengths == 0).any()):
        raise ValueError("shaped_rewards: every answer needs at least one token in mask")
    mask = mask.bool()
    penalty = -beta * kl_estimate(torch.where(mask, logp, 0.0), torch.where(mask, ref_logp, 0.0), kind)  # (M, N)
    last = nn.functional.one_hot(lengths - 1, mask.shape[1]).bool()  # (M, N): the last answer token
    rewards = torch.where(mask, penalty, 0.0)
    return rewards + torch.where(last, scores[:, None], 0.0)


def token_advantages(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """GAE over the tokens of each answer -> (advantages (M, N), returns (M, N)), 0 where mask is False.

    rewards, values: (M, N), batch-first: one answer a row, values[i, t] = V(x, y_<t) from the critic.
    The episode ends after the answer's last token (terminated: no value after it). ``advantages.gae``
    works time-first, so the (M, N) tensors are transposed to (T = N, N_envs = M) and back.
    With gamma = lam = 1: advantages[t] = sum of rewards from t on, minus values[t].
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(f"token_advantages: rewards, values, mask must be (M, N) alike, got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)}, {tuple(mask.shape)}")
    mask = mask.bool()
    values = torch.where(mask, values, 0.0)
    rewards = torch.where(mask, rewards, 0.0)
    last = nn.functional.one_hot(mask.sum(-1).clamp(min=1) - 1, mask.shape[1]).bool()  # (M, N)
    terminated = (last | ~mask).to(rewards.dtype)  # the end of the answer; padding ends at once too
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # V after token t
    adv, ret = gae(rewards.T, values.T, next_values.T, terminated.T, torch.zeros_like(terminated.T), gamma, lam)  # (N, M)
    return torch.where(mask, adv.T, 0.0), torch.where(mask, ret.T, 0.0)


# ---- the training loop ----------------------------------------------------------------------------


def train(config: Config | None = None, progress=None, *, ref_model=None, reward_model=None,
          task: AdditionTask | None = None) -> dict:
    """RLHF: PPO from the SFT model against a learned reward model -> history, the policy under "policy".

    ref_model: the SFT model (stage 1); trained here when None (history["sft"]). reward_model: a
    ``reward_model.RewardModel`` (stage 2); trained here when None with ``rm_steps`` steps on
    ``rm_train_prompts`` ranked prompts (history["reward_model"] then has its held-out pair accuracy,
    on pairs from ``probe_prompts`` held-out prompts, and its seconds, which count in ``seconds``).
    History per iteration: ``score`` (mean reward-model score of the rollout, no-EOS penalty included),
    ``true_reward`` (the verifiable reward of the same answers: logged, never trained on), ``kl`` (mean over
    answers of the summed KL estimate to pi_ref), ``beta``, ``clip_fraction``, ``value_loss``,
    ``explained_variance``, ``length``, ``no_eos_share``; per evaluation: ``eval_iteration``,
    ``eval_seconds``, ``greedy_accuracy_probe``, ``sampled_accuracy_probe``, ``kl_probe``, ``score_probe``
    (reward-model score of sampled held-out answers). Once: ``before``, ``after``, ``seconds`` (reward model
    if trained here + PPO), ``policy``, ``critic``, ``reward_net`` (the reward model used).
    """
    # seed
    config = config or Config()
    task = task or AdditionTask()
    torch.set_num_threads(config.num_threads)
    ref_model, history = sft.reference_model(ref_model, config, task, progress)
    seconds = 0.0
    if reward_model is None:  # stage 2, timed: it is part of RLHF's cost
        rm_config = rm_module.Config(seed=config.seed, steps=config.rm_steps, train_prompts=config.rm_train_prompts,
                                     eval_prompts=config.probe_prompts, eval_every=config.rm_steps,
                                     num_threads=config.num_threads, progress_bar=config.progress_bar)
        rm_history = rm_module.train(rm_config, progress, sft_model=ref_model, task=task)
        reward_model, seconds = rm_history["model"], rm_history["seconds"]
        history["reward_model"] = {"heldout_pair_accuracy": rm_history["heldout_pair_accuracy"][-1],
                                   "seconds": rm_history["seconds"]}
    generator = seed_everything(config.seed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)

    # data: training prompts; held-out prompts for the final accuracies and the periodic probe
    train_pairs = task.split("train")
    heldout = subset_pairs(task.split("heldout"), config.eval_prompts, seed=0)
    probe = subset_pairs(heldout, config.probe_prompts, seed=1)
    P, eos_id = task.prompt_len, task.tokenizer.eos_id

    def score(pairs, completions):  # (M, 2), (M, N) -> (M,): the learned reward, and the stated penalty
        no_eos = ~(completions == eos_id).any(-1)
        return rm_module.score(reward_model, task.prompts(pairs), completions) - config.no_eos_penalty * no_eos.float()

    # models and optimizers: pi_ref and the reward model frozen; policy and critic trained, separately
    ref = copy.deepcopy(ref_model).eval().requires_grad_(False)
    reward_model = reward_model.eval().requires_grad_(False)
    policy = disable_dropout(copy.deepcopy(ref_model).train().requires_grad_(True))  # TRL's disable_dropout
    critic = disable_dropout(ValueModel(ref_model).train())
    policy_opt = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=config.critic_learning_rate)
    adaptive = None
    if config.adaptive_kl:
        adaptive = (AdaptiveKL(config.kl_target, config.beta) if config.kl_controller == "ppo"
                    else ProportionalKL(config.kl_target, config.beta, config.kl_horizon))

    # storage
    for key in ("score", "true_reward", "kl", "beta", "clip_fraction", "value_loss", "explained_variance", "length",
                "no_eos_share", "eval_iteration", "eval_seconds", "greedy_accuracy_probe", "sampled_accuracy_probe",
                "kl_probe", "score_probe"):
        history[key] = []
    _evaluate(history, policy, ref, task, probe, eval_gen, score, 0, seconds, progress)

    for iteration in tqdm(range(1, config.iterations + 1), desc="RLHF (PPO)", disable=not config.progress_bar):
        tick = time.perf_counter()
        beta = adaptive.beta if config.adaptive_kl else config.beta

        # rollout: answers from pi_old, scored by the reward model, no gradient
        rows = torch.randint(len(train_pairs), (config.prompts_per_iteration,), generator=generator)
        data = collect(policy, ref, task, train_pairs[rows], config.samples_per_prompt, generator, config.temperature,
                       reward_fn=score)
        if bool(torch.isnan(data.rewards).any()):
            raise ValueError(f"rlhf.train: the reward function (the reward model's score minus the no-EOS penalty) "
                             f"returned NaN for {int(torch.isnan(data.rewards).sum())} of {len(data.rewards)} answers")
        mask = completion_slice(data.mask, P)  # (M, N)
        old_logp, ref_logp = completion_slice(data.old_logp, P), completion_slice(data.ref_logp, P)  # (M, N)
        with torch.no_grad():
            old_values = completion_slice(critic(data.tokens), P)  # (M, N)

        # rewards and advantages: KL-shaped per-token reward, GAE over tokens, whitened
        rewards = shaped_rewards(data.rewards, old_logp, ref_logp, mask, beta, config.kl_kind)  # (M, N)
        advantages, returns = token_advantages(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = torch.where(mask, advantages, 0.0)
            advantages[mask] = normalize(advantages[mask])

        # epochs of minibatches: clipped surrogate for the policy, clipped value loss for the critic
        M = len(data.rewards)
        for _ in range(config.epochs):
            order = torch.randperm(M, generator=generator)
            for rows in order.chunk(config.minibatches):
                mb_mask = mask[rows]  # (b, N)
                out = sequence_logprobs(policy, data.tokens[rows], data.completion_mask[rows], data.temperature)
                logp = completion_slice(out["per_token"], P)  # (b, N)
                pg_loss = aggregate(clipped_surrogate(logp, old_logp[rows], advantages[rows], config.clip_eps), mb_mask, "dapo")
                _step(policy_opt, policy, pg_loss, config.max_grad_norm)
                values = completion_slice(critic(data.tokens[rows]), P)  # (b, N)
                v_loss = value_loss(values[mb_mask], returns[rows][mb_mask], old_values[rows][mb_mask], config.value_clip or None)
                _step(critic_opt, critic, v_loss, config.max_grad_norm)

        # diagnostics
        kl_per_answer = (kl_estimate(old_logp, ref_logp, config.kl_kind) * mask).sum(-1).mean().item()
        if isinstance(adaptive, ProportionalKL):
            adaptive.update(kl_per_answer, M)  # n = the answers of this iteration, as TRL 0.x's batch_size
        elif adaptive is not None:
            adaptive.update(kl_per_answer)
        seconds += time.perf_counter() - tick
        history["score"].append(data.rewards.mean().item())
        history["true_reward"].append(task.reward(data.pairs, data.completions).float().mean().item())
        history["kl"].append(kl_per_answer)
        history["beta"].append(beta)
        last_clip = clip_fraction(logp[mb_mask], old_logp[rows][mb_mask], config.clip_eps)  # of the last minibatch
        history["clip_fraction"].append(last_clip.item())
        history["value_loss"].append(v_loss.item())
        history["explained_variance"].append(float(explained_variance(old_values[mask], returns[mask])))
        history["length"].append(mask.sum(-1).float().mean().item())
        history["no_eos_share"].append((~(data.completions == eos_id).any(-1)).float().mean().item())

        # evaluation, not timed
        if iteration % config.eval_every == 0 or iteration == config.iterations:
            _evaluate(history, policy, ref, task, probe, eval_gen, score, iteration, seconds, progress)

    policy.eval()
    history["before"] = sft.final_evaluation(ref, task, torch.Generator().manual_seed(config.seed + 2),
                                             config.eval_samples, heldout)
    history["after"] = sft.final_evaluation(policy, task, eval_gen, config.eval_samples, heldout)
    history.update(seconds=seconds, policy=policy, critic=critic.eval(), reward_net=reward_model)
    return history


def _step(optimizer, net, loss, max_grad_norm):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    optimizer.step()


@torch.no_grad()
def _evaluate(history, policy, ref, task, probe, generator, score, iteration, seconds, progress):
    """Held-out accuracy, KL to pi_ref and reward-model score on the probe prompts, appended to history."""
    tok = task.tokenizer
    sample_probe = sample(policy, task.prompts(probe), task.max_new_tokens, 1.0, generator, tok.eos_id, tok.pad_id)
    record = {
        "eval_iteration": iteration,
        "eval_seconds": seconds,
        "greedy_accuracy_probe": evaluate(policy, task, probe, temperature=0.0),
        "sampled_accuracy_probe": float(task.reward(probe, sample_probe).float().mean()),
        "kl_probe": kl_to_reference(policy, ref, task, probe, generator),
        "score_probe": float(score(probe, sample_probe).mean()),
    }
    for key, value in record.items():
        history[key].append(value)
    if progress is not None:
        progress({"stage": "rlhf", **record})
