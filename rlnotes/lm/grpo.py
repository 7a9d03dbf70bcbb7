"""GRPO: PPO's clipped objective with the group of answers to one prompt as its own baseline.

Introduced in ``07_grpo`` (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, sec. 4.1, eq. 3 and 4).
It reads in the order of ``rlnotes.algos.ppo`` so that the two can be put side by side; what changes:

    PPO (05)                                     GRPO (here)
    rollout of T steps in N envs                 G answers for each of B prompts (``rollout.collect``)
    critic V(s), GAE advantages                  no critic: ``advantages.group_relative`` on the G rewards
    one advantage per action                     one advantage per answer, given to each of its tokens
    entropy bonus, value loss                    beta * k3 per token, a KL penalty to pi_ref (see below)
    mean over the minibatch                      ``objectives.aggregate`` over tokens (grpo, dapo, dr_grpo)

The loss of one inner step, per token t of answer i (to MINIMISE):

    ``clipped_surrogate(log pi(y_it), log pi_old(y_it), A_i, eps) + beta * kl_estimate(log pi, log pi_ref, "k3")``

with ``A_i = group_relative(r_i1..r_iG)``.

Which KL the term descends. The optimiser uses the term's GRADIENT, and the sampled tokens are data:
the loss is differentiated through log pi(y) with y held fixed, and d(beta k3)/d log pi(y) is
beta (1 - pi_ref(y) / pi(y)). Averaged over the tokens, the expected gradient depends on which policy
sampled them (checked exactly by enumerating a categorical in tests/test_kl_estimator_gradients.py):

* on-policy (pi_old = pi: the first inner step), the VALUE of k3 is an unbiased estimate of
  KL(pi || pi_ref), but its expected gradient is

      E_{y ~ pi}[grad k3] = sum_y (pi(y) - pi_ref(y)) grad log pi(y) = grad KL(pi_ref || pi),

  the gradient of the other KL (mass-covering: it pulls pi up wherever pi_ref has mass); k1's expected
  gradient is 0 and k2's is grad KL(pi || pi_ref);
* from the second inner step the tokens come from pi_old, not from pi: k3's value is then a biased
  estimate of KL(pi || pi_ref) (unbiased only for the sampler's own KL(pi_old || pi_ref)), and its
  expected gradient follows neither KL exactly (it is grad KL(pi_ref || pi) at pi = pi_old);
* TRL 1.16 multiplies k3 by the differentiable ratio pi / pi_old (GRPOConfig.use_bias_correction_kl,
  default True): value and expected gradient are then those of KL(pi || pi_ref) exactly, on- and off-policy.

This module keeps DeepSeekMath's plain k3. Near pi_ref the two KLs' gradients agree to first order (their
difference is of second order in the distance), so the choice shows only once the policy has moved
(NeMo-RL PR #2506). ``history["kl"]`` logs the k3 value on the rollout; ``history["kl_probe"]`` the exact
KL(pi || pi_ref) per answer on held-out prompts.

A group whose G answers all have the same reward (all right or all wrong) has A = 0 exactly, so it adds
nothing to the surrogate (only the KL term); its share is logged as ``zero_variance_share``. Three choices
of the literature are options: ``scale`` (DeepSeekMath divides by the group's std; Dr. GRPO, Liu et al.
2025, does not), ``leave_one_out`` (RLOO, Ahmadian et al. 2024: the baseline of each answer is the mean of
the OTHER G - 1), and ``aggregation``.

Defaults (``Config``): G 8 x 32 prompts an iteration, 2 inner steps, eps 0.2, k3 beta 0.04 (DeepSeekMath's
beta; TRL 1.16's GRPOConfig defaults to beta 0.0 and then loads no reference model), learning rate 3e-4,
chosen on seed 4 (after 350 iterations from the SFT model, held-out sampled accuracy +26.6 points with
greedy -0.6 at 3e-4; +26.4 with greedy -1.9 at 5e-4) and seed 1 (+18 points at 1e-4).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from rlnotes._checks import check_fields
from rlnotes.advantages import group_relative
from rlnotes.divergences import kl_estimate
from rlnotes.objectives import AGGREGATION_MODES, aggregate, clip_fraction, clipped_surrogate
from rlnotes.utils import seed_everything

from . import sft
from .logprobs import sequence_logprobs
from .model import disable_dropout
from .rollout import Rollout, collect, kl_to_reference, subset_pairs
from .sampling import evaluate
from .task import AdditionTask

__all__ = ["Config", "advantages_of", "grpo_loss", "update", "train"]


@dataclass
class Config:
    seed: int = field(default=1, metadata={"help": "seed of the SFT model (if trained here), sampling and training"})
    sft_steps: int = field(default=1300, metadata={"help": "SFT steps when no reference model is given (`rlnotes lm grpo`)"})
    iterations: int = field(default=700, metadata={"help": "rollouts, each followed by inner_steps updates; ~0.17 s each"})
    prompts_per_iteration: int = field(default=32, metadata={"help": "B, training prompts an iteration; 16 to 64"})
    group_size: int = field(default=8, metadata={"help": "G, answers sampled per prompt; 4 to 16 (>= 2)"})
    inner_steps: int = field(default=2, metadata={"help": "gradient steps on each rollout (PPO's epochs); 1 to 4"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam step size; 1e-4 to 5e-4"})
    clip_eps: float = field(default=0.2, metadata={"help": "clip range of the ratio, 1 +- eps; 0.1 to 0.3"})
    clip_eps_high: float = field(default=0.0, metadata={"help": "upper clip range (DAPO's clip-higher, 0.28); 0: = clip_eps"})
    beta: float = field(default=0.04, metadata={"help": "weight of the k3 KL to pi_ref per token; 0 to 0.1"})
    scale: bool = field(default=True, metadata={"help": "divide advantages by the group's std (DeepSeekMath); off: Dr. GRPO"})
    leave_one_out: bool = field(default=False, metadata={"help": "baseline = mean of the other G - 1 answers (RLOO)"})
    aggregation: str = field(default="grpo", metadata={"help": "token loss reduction: grpo, dapo or dr_grpo"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; every model scores the rollout at it (TRL)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "global gradient-norm clip; 0: none"})
    eval_every: int = field(default=50, metadata={"help": "iterations between held-out evaluations (not timed)"})
    eval_prompts: int = field(default=0, metadata={"help": "held-out prompts of the final accuracies (0: all 2000)"})
    eval_samples: int = field(default=4, metadata={"help": "answers sampled per held-out prompt for sampled accuracy"})
    probe_prompts: int = field(default=500, metadata={"help": "held-out prompts of the periodic evaluations"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for this tiny model"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        check_fields(self, "grpo.Config", at_least_one=("sft_steps", "iterations", "prompts_per_iteration", "inner_steps",
                                                          "eval_every", "eval_samples", "probe_prompts", "num_threads"),
                     non_negative=("seed", "eval_prompts", "beta", "clip_eps_high", "max_grad_norm"),
                     positive=("learning_rate", "clip_eps", "temperature"))
        if self.group_size < 2:
            raise ValueError(f"grpo.Config: group_size must be >= 2 (a group is its own baseline), got {self.group_size}")
        if self.aggregation not in AGGREGATION_MODES:
            raise ValueError(f"grpo.Config: aggregation must be one of {', '.join(AGGREGATION_MODES)}, got {self.aggregation!r}")


# ---- one iteration's parts: the advantages, the loss, the update -----------------------------------


def advantages_of(rollout: Rollout, scale: bool = True, leave_one_out: bool = False) -> torch.Tensor:
    """Group-relative advantage of each answer, one per row -> (M,).

    The (M,) rewards are viewed as (B, G), one row a prompt, and ``advantages.group_relative`` compares
    each answer with its own group; a group of equal rewards gives exactly 0.
    """
    return group_relative(rollout.grouped_rewards, scale=scale, leave_one_out=leave_one_out).reshape(-1)  # (B, G) -> (M,)


def grpo_loss(logp, rollout: Rollout, advantages, config: Config) -> tuple[torch.Tensor, dict]:
    """GRPO's loss of one inner step (to minimise) and its parts -> (scalar, logs).

    logp: (M, L - 1) per-token log-probs of the rollout's tokens under the policy being trained (with
    gradient), at the rollout's temperature. advantages: (M,), one per answer, given to its tokens as
    (M, 1). The per-token loss is the clipped surrogate plus beta * k3(pi, pi_ref), the token held fixed:
    its value estimates KL(pi || pi_ref), but on-policy its expected gradient is that of
    beta * KL(pi_ref || pi), and on pi_old's tokens (inner steps >= 2) that of neither KL (module
    docstring); ``objectives.aggregate`` reduces it over the mask. Raises ValueError if advantages is not (M,).
    """
    M = len(rollout.rewards)
    if advantages.shape != (M,):
        raise ValueError(f"grpo_loss: advantages {tuple(advantages.shape)} must be ({M},), one per answer of the rollout")
    eps_high = config.clip_eps_high or None
    surrogate = clipped_surrogate(logp, rollout.old_logp, advantages[:, None], config.clip_eps, eps_high)  # (M, L - 1)
    kl = kl_estimate(logp, rollout.ref_logp, "k3")  # (M, L - 1), >= 0
    per_token = surrogate + config.beta * kl
    max_len = rollout.completions.shape[-1]  # N, the generation budget (Dr. GRPO's constant)
    loss = aggregate(per_token, rollout.mask, config.aggregation, max_len=max_len)
    with torch.no_grad():
        mask = rollout.mask
        logs = {
            "surrogate": aggregate(surrogate, mask, config.aggregation, max_len=max_len).item(),
            "kl": (kl[mask].mean()).item(),  # per-token k3 value: an estimate of KL(pi || pi_ref) on the batch
            "clip_fraction": clip_fraction(logp[mask], rollout.old_logp[mask], config.clip_eps, eps_high).item(),
        }
    return loss, logs


def update(policy, optimizer, rollout: Rollout, advantages, config: Config) -> tuple[torch.Tensor, dict]:
    """GRPO's update from one rollout: ``config.inner_steps`` Adam steps on ``grpo_loss`` -> (loss, logs) of the last.

    rollout: G answers per prompt sampled from pi_old, the policy as it was before this update, with the
    per-token log-probs of pi_old (``rollout.old_logp``) and of pi_ref (``rollout.ref_logp``), both
    without gradient (``rollout.collect``). advantages: (M,), one per answer (``advantages_of``).
    """
    for _ in range(config.inner_steps):  # PPO's epochs: the same rollout each time
        # the sampled tokens' log-probs under the policy being trained, WITH gradient, at the sampling temperature
        logp = sequence_logprobs(policy, rollout.tokens, rollout.completion_mask, rollout.temperature)["per_token"]  # (M, L - 1)
        # clipped ratio pi / pi_old (exactly 1 in the first step) + beta * k3 to pi_ref, aggregated over tokens
        loss, logs = grpo_loss(logp, rollout, advantages, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        optimizer.step()
    return loss, logs


# ---- the training loop ----------------------------------------------------------------------------


def train(config: Config | None = None, progress=None, *, ref_model=None, task: AdditionTask | None = None) -> dict:
    """GRPO from the SFT model `ref_model` (kept frozen as pi_ref) -> history, the policy under "policy".

    ref_model: when None, an SFT model is trained first (``sft.reference_model``; history["sft"]).
    History, per iteration: ``reward`` (mean reward of the rollout), ``zero_variance_share`` (groups
    whose G rewards are all equal), ``length`` (mean completion tokens, EOS included), ``loss``,
    ``surrogate``, ``kl`` (per-token k3 KL to pi_ref on the batch), ``clip_fraction`` (last inner step);
    per evaluation (every ``eval_every`` iterations, on ``probe_prompts`` held-out prompts, not timed):
    ``eval_iteration``, ``eval_seconds`` (training seconds so far), ``greedy_accuracy_probe``,
    ``sampled_accuracy_probe``, ``kl_probe`` (KL(pi || pi_ref) per answer, exact per token,
    ``rollout.kl_to_reference``). Once: ``before``, ``after`` (held-out greedy and sampled accuracy
    of pi_ref and of the policy), ``seconds`` (training time), ``policy``.
    """
    # seed
    config = config or Config()
    task = task or AdditionTask()
    torch.set_num_threads(config.num_threads)
    ref_model, history = sft.reference_model(ref_model, config, task, progress)
    generator = seed_everything(config.seed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)

    # prompts: training split for rollouts, held-out split for evaluation
    train_pairs = task.split("train")
    heldout = subset_pairs(task.split("heldout"), config.eval_prompts, seed=0)
    probe = subset_pairs(heldout, config.probe_prompts, seed=1)

    # models and optimizer: pi_ref frozen, the policy a trainable copy of it, its dropout off (TRL's
    # disable_dropout): a random mask would make the first inner step's ratio pi / pi_old differ from 1
    ref = copy.deepcopy(ref_model).eval().requires_grad_(False)
    policy = disable_dropout(copy.deepcopy(ref_model).train().requires_grad_(True))
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)

    # storage
    for key in ("reward", "zero_variance_share", "length", "loss", "surrogate", "kl", "clip_fraction", "eval_iteration",
                "eval_seconds", "greedy_accuracy_probe", "sampled_accuracy_probe", "kl_probe"):
        history[key] = []
    _evaluate(history, policy, ref, task, probe, eval_gen, 0, 0.0, progress)

    seconds = 0.0
    for iteration in tqdm(range(1, config.iterations + 1), desc="GRPO", disable=not config.progress_bar):
        tick = time.perf_counter()

        # rollout: G answers for each of B prompts from pi_old (the policy as it is now), scored, with their
        # per-token log-probs under pi_old (old_logp) and pi_ref (ref_logp); no gradient
        rows = torch.randint(len(train_pairs), (config.prompts_per_iteration,), generator=generator)
        rollout = collect(policy, ref, task, train_pairs[rows], config.group_size, generator, config.temperature)

        # advantages: each answer against its own group, no critic
        advantages = advantages_of(rollout, config.scale, config.leave_one_out)  # (M,)

        # inner steps on the same rollout (PPO's epochs): ``update``
        loss, logs = update(policy, optimizer, rollout, advantages, config)

        # diagnostics
        seconds += time.perf_counter() - tick
        grouped = rollout.grouped_rewards
        unscored = torch.isnan(rollout.rewards)  # answers a reward function could not score: left out of the mean
        history["reward"].append((rollout.rewards[~unscored] if unscored.any() else rollout.rewards).mean().item())
        history["zero_variance_share"].append((grouped == grouped[:, :1]).all(-1).float().mean().item())
        history["length"].append(rollout.lengths.float().mean().item())
        history["loss"].append(loss.item())
        for key, value in logs.items():
            history[key].append(value)

        # evaluation, not timed
        if iteration % config.eval_every == 0 or iteration == config.iterations:
            _evaluate(history, policy, ref, task, probe, eval_gen, iteration, seconds, progress)

    policy.eval()
    history["before"] = sft.final_evaluation(ref, task, torch.Generator().manual_seed(config.seed + 2),
                                             config.eval_samples, heldout)
    history["after"] = sft.final_evaluation(policy, task, eval_gen, config.eval_samples, heldout)
    history["seconds"] = seconds
    history["policy"] = policy
    return history


def _evaluate(history, policy, ref, task, probe, generator, iteration, seconds, progress):
    """Held-out greedy and sampled accuracy and KL to pi_ref on the probe prompts, appended to history."""
    record = {
        "eval_iteration": iteration,
        "eval_seconds": seconds,
        "greedy_accuracy_probe": evaluate(policy, task, probe, temperature=0.0),
        "sampled_accuracy_probe": evaluate(policy, task, probe, 1.0, generator, samples_per_prompt=2),
        "kl_probe": kl_to_reference(policy, ref, task, probe, generator),
    }
    for key, value in record.items():
        history[key].append(value)
    if progress is not None:
        progress({"stage": "grpo", **record})
