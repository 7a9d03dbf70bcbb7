"""DPO and its family on the tiny GPT: preference data from the SFT model, training, diagnostics.

Introduced in ``06_dpo``. The pipeline, in the order ``train`` runs it:

1. **Preference data, on-policy.** Sample `samples_per_prompt` answers per training prompt from the
   SFT model (the reference, pi_ref) at temperature 1, score them with the verifiable reward, and keep
   one pair per prompt whose answers differ in reward: a best answer (chosen) against a worst one
   (rejected). KTO instead takes every sampled answer with its thumbs up or down (unpaired labels).
2. **Reference log-probs**, once, under ``no_grad``: pi_ref is frozen.
3. **Training** on ``rlnotes.preference.dpo_loss`` (sigmoid = DPO, ipo, hinge, robust) or
   ``kto_loss``, plus an optional NLL term on the chosen answer (``nll_weight``; RPO, Pang et al.
   2024; TRL 0.x's ``rpo_alpha``, in TRL 1.16 ``loss_type=["sigmoid", "sft"]`` with ``loss_weights``),
   with Adam and a step size decaying linearly to 0. The defaults
   (beta 0.1, nll_weight 1) are the chapter's fixed recipe; ``nll_weight=0`` is plain DPO.
4. **Diagnostics** (TRL's names in brackets): implicit rewards of chosen and rejected answers
   ``beta * (log pi - log pi_ref)`` [rewards/chosen, rewards/rejected], their margin [rewards/margins],
   the share of pairs whose chosen reward is the larger [rewards/accuracies], the policy's mean
   log-probs [logps/chosen, logps/rejected], and KL(pi || pi_ref) on held-out prompts.

Why the NLL term: DPO only sees the DIFFERENCE of log-ratios. Lowering both log pi(chosen) and
log pi(rejected), the rejected faster, lowers the loss too; the probability taken from both goes to
answers that are in neither, including ones the SFT model never produced. With a small beta this
happens here: the margin and the preference accuracy go up while the greedy accuracy goes DOWN. An
NLL term on the chosen answers (or a larger beta) keeps the chosen answers' probability up.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from rlnotes.preference import DPO_LOSS_TYPES, dpo_loss, implicit_reward, kto_loss
from rlnotes.utils import seed_everything

from . import sft
from .logprobs import collate, sequence_logprobs, token_mean_nll
from .model import disable_dropout
from .rollout import Samples, kl_to_reference, reference_logprobs, sample_answers, subset_pairs
from .sampling import evaluate
from .task import AdditionTask

__all__ = [
    "LOSS_TYPES", "Config", "PreferenceData", "UnpairedData", "make_pairs", "make_unpaired", "other_prompt_rows",
    "preference_metrics", "train",
    # shared by every LM method, defined in rollout and re-exported for chapter 06's cells
    "Samples", "sample_answers", "reference_logprobs", "kl_to_reference", "subset_pairs",
]

LOSS_TYPES = (*DPO_LOSS_TYPES, "kto")


@dataclass
class Config:
    seed: int = field(default=1, metadata={"help": "seed of the SFT model, the sampled preference data and training"})
    sft_steps: int = field(default=1300, metadata={"help": "SFT steps when no reference model is given and one is trained first "
                                                           "(`rlnotes lm dpo`)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid (DPO), ipo, hinge, robust, or kto"})
    beta: float = field(default=0.1, metadata={"help": "KL strength: small beta lets the policy move far from pi_ref"})
    label_smoothing: float = field(default=0.0, metadata={"help": "assumed label-flip rate (sigmoid: cDPO; robust: rDPO)"})
    nll_weight: float = field(default=1.0, metadata={"help": "weight of the NLL on chosen answers (RPO alpha; 0 = plain DPO)"})
    preference_weight: float = field(default=1.0, metadata={"help": "weight of the preference loss "
                                                                    "(0 with nll_weight > 0: SFT on the chosen answers only)"})
    samples_per_prompt: int = field(default=4, metadata={"help": "answers sampled per training prompt from pi_ref"})
    train_prompts: int = field(default=0, metadata={"help": "training prompts to sample answers for (0: all 8000)"})
    steps: int = field(default=300, metadata={"help": "gradient steps"})
    batch_size: int = field(default=128, metadata={"help": "pairs per step (KTO: 2x this many unpaired answers)"})
    learning_rate: float = field(default=6e-4, metadata={"help": "Adam step size at the start"})
    linear_decay: bool = field(default=True, metadata={"help": "decay the step size linearly to 0 (TRL's default schedule)"})
    desirable_weight: float = field(default=1.0, metadata={"help": "KTO weight of desirable answers"})
    undesirable_weight: float = field(default=1.0, metadata={"help": "KTO weight of undesirable answers"})
    eval_prompts: int = field(default=0,
                              metadata={"help": "held-out prompts for the final accuracies and held-out pairs (0: all 2000)"})
    eval_every: int = field(default=50, metadata={"help": "steps between diagnostics on held-out prompts (not timed)"})
    eval_samples: int = field(default=4, metadata={"help": "answers sampled per held-out prompt for the final sampled accuracy"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for this tiny model"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"dpo.Config: loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        for name in ("sft_steps", "samples_per_prompt", "steps", "batch_size", "eval_every", "eval_samples", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"dpo.Config: {name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"dpo.Config: samples_per_prompt must be >= 2 to make pairs, got {self.samples_per_prompt}")
        for name in ("seed", "train_prompts", "eval_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"dpo.Config: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("beta", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"dpo.Config: {name} must be > 0, got {getattr(self, name)}")
        for name in ("nll_weight", "preference_weight", "desirable_weight", "undesirable_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"dpo.Config: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"dpo.Config: label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


# ---- 1. preference data ------------------------------------------------------------------------------


@dataclass
class PreferenceData:
    """One row a pair: pairs (M, 2) operands, prompts (M, P), chosen and rejected (M, N) completion ids,
    chosen_reward and rejected_reward (M,)."""

    pairs: torch.Tensor
    prompts: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass
class UnpairedData:
    """One row an answer: pairs (M, 2), prompts (M, P), completions (M, N), desirable (M,) bool."""

    pairs: torch.Tensor
    prompts: torch.Tensor
    completions: torch.Tensor
    desirable: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)


def make_pairs(task: AdditionTask, samples: Samples, generator=None) -> PreferenceData:
    """Best against worst answer of each prompt -> PreferenceData (prompts with a reward gap only).

    Ties are broken at random, so with binary rewards the rejected answer is a random wrong one. A
    prompt whose k answers all have the same reward gives no pair (nothing to prefer). A NaN reward
    (an answer that could not be scored) is never chosen nor rejected: the pair is made of the others.
    """
    rewards, completions = samples.rewards, samples.completions
    jitter = torch.rand(rewards.shape, generator=generator) * 1e-3  # random tie-break, far below a reward step
    unscored = torch.isnan(rewards)  # (B, k); argmax / argmin would pick a NaN
    best = torch.where(unscored, float("-inf"), rewards + jitter).argmax(-1)  # (B,)
    worst = torch.where(unscored, float("inf"), rewards - jitter).argmin(-1)  # (B,)
    rows = torch.arange(len(rewards))
    keep = rewards[rows, best] > rewards[rows, worst]  # (B,)
    return PreferenceData(
        pairs=samples.pairs[keep],
        prompts=task.prompts(samples.pairs[keep]),
        chosen=completions[rows, best][keep],
        rejected=completions[rows, worst][keep],
        chosen_reward=rewards[rows, best][keep],
        rejected_reward=rewards[rows, worst][keep],
    )


def make_unpaired(task: AdditionTask, samples: Samples) -> UnpairedData:
    """Every sampled answer with a thumbs up (reward 1) or down -> UnpairedData of B * k rows."""
    k = samples.rewards.shape[1]
    repeated = samples.pairs.repeat_interleave(k, dim=0)  # (B * k, 2)
    completions = samples.completions.reshape(len(repeated), -1)  # (B * k, N)
    return UnpairedData(repeated, task.prompts(repeated), completions, samples.rewards.reshape(-1) > 0.5)


# ---- 2. log-probs and diagnostics ---------------------------------------------------------------------


@torch.no_grad()
def preference_metrics(policy, ref_chosen, ref_rejected, data: PreferenceData, beta: float, eos_id: int = 1) -> dict:
    """Implicit-reward diagnostics of `policy` on preference pairs (e.g. held-out pairs).

    ref_chosen, ref_rejected: (M,) reference sequence log-probs of data.chosen / data.rejected.
    Returns means of: chosen_reward, rejected_reward, margin, reward_accuracy (chosen reward strictly
    larger: 0 at the start, where every margin is 0), and ``prefers_chosen`` (log pi(chosen) > log
    pi(rejected): the policy itself, not its change, ranks the pair right). With no pair (M = 0, e.g. no
    held-out prompt whose answers differed in reward) every mean is NaN: nothing was measured.
    """
    if len(data) == 0:
        return dict.fromkeys(("chosen_reward", "rejected_reward", "margin", "reward_accuracy", "prefers_chosen"),
                             float("nan"))
    chosen = reference_logprobs(policy, data.prompts, data.chosen, eos_id)
    rejected = reference_logprobs(policy, data.prompts, data.rejected, eos_id)
    rc, rr = implicit_reward(chosen, ref_chosen, beta), implicit_reward(rejected, ref_rejected, beta)
    return {
        "chosen_reward": float(rc.mean()),
        "rejected_reward": float(rr.mean()),
        "margin": float((rc - rr).mean()),
        "reward_accuracy": float((rc > rr).float().mean()),
        "prefers_chosen": float((chosen > rejected).float().mean()),
    }


def _dpo_step(policy, data: PreferenceData, ref_c, ref_r, rows, config: Config, eos_id: int):
    """Loss and logs of one minibatch of pairs (rows) for the DPO family."""
    B = len(rows)
    prompts = data.prompts[rows].repeat(2, 1)  # (2B, P): chosen rows first, then rejected
    completions = torch.cat([data.chosen[rows], data.rejected[rows]])  # (2B, N)
    tokens, mask = collate(prompts, completions, eos_id)  # one forward pass for both halves
    out = sequence_logprobs(policy, tokens, mask)
    pc, pr = out["sum"][:B], out["sum"][B:]  # (B,) each
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        pc, pr, ref_c[rows], ref_r[rows], config.beta, config.loss_type, config.label_smoothing
    )
    loss = config.preference_weight * losses.mean()
    nll = token_mean_nll(out, slice(0, B))  # mean NLL over the chosen answers' tokens
    if config.nll_weight > 0:
        loss = loss + config.nll_weight * nll
    logs = {
        "chosen_reward": chosen_rewards.mean().item(),
        "rejected_reward": rejected_rewards.mean().item(),
        "margin": (chosen_rewards - rejected_rewards).mean().item(),
        "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
        "chosen_logp": pc.mean().item(),
        "rejected_logp": pr.mean().item(),
        "nll": nll.item(),
    }
    return loss, logs


def other_prompt_rows(pairs: torch.Tensor, rows: torch.Tensor, generator=None, tries: int = 100) -> torch.Tensor:
    """For each of `rows`, a random row of the data set whose PROMPT differs -> (B,) row indices.

    pairs: (M, 2) operands of every row; rows: (B,) indices, possibly repeated (drawn with replacement).
    KTO's reference point must be built from answers to OTHER prompts: pairing a row with the next row
    of the batch (TRL's shift) pairs it with its own answer when a row is drawn twice, or when the batch
    holds one row, and z becomes that example's own log-ratio.
    Raises ValueError if every row has the same prompt (no mismatched couple exists).
    """
    other = torch.randint(len(pairs), rows.shape, generator=generator)
    for _ in range(tries):
        same = (pairs[other] == pairs[rows]).all(-1)  # (B,)
        if not same.any():
            return other
        other[same] = torch.randint(len(pairs), (int(same.sum()),), generator=generator)
    if (pairs == pairs[0]).all():
        raise ValueError("other_prompt_rows: every row has the same prompt; KTO's reference point needs two or more")
    raise RuntimeError(f"other_prompt_rows: no row with another prompt found in {tries} draws")


def _kto_step(policy, ref, data: UnpairedData, ref_logps, rows, config: Config, eos_id: int, generator=None):
    """Loss and logs of one minibatch of unpaired answers (rows) for KTO.

    The reference point z is TRL's estimate of KL(pi || pi_ref): the mean log-ratio of MISMATCHED
    (prompt, answer) couples, each prompt with the answer of a row whose prompt differs
    (``other_prompt_rows``), detached.
    """
    prompts, completions = data.prompts[rows], data.completions[rows]
    tokens, mask = collate(prompts, completions, eos_id)
    out = sequence_logprobs(policy, tokens, mask)
    with torch.no_grad():
        others = other_prompt_rows(data.pairs, rows, generator)  # (B,) rows answering other prompts
        mismatched = collate(prompts, data.completions[others], eos_id)
        kl = (sequence_logprobs(policy, *mismatched)["sum"] - sequence_logprobs(ref, *mismatched)["sum"]).mean()
    desirable = data.desirable[rows]
    losses = kto_loss(out["sum"], ref_logps[rows], desirable, kl, config.beta, config.desirable_weight, config.undesirable_weight)
    loss = config.preference_weight * losses.mean()
    nll = token_mean_nll(out, desirable)  # NLL of the thumbs-up answers
    if config.nll_weight > 0:
        loss = loss + config.nll_weight * nll
    rewards = implicit_reward(out["sum"], ref_logps[rows], config.beta).detach()
    logs = {
        "chosen_reward": rewards[desirable].mean().item() if desirable.any() else float("nan"),
        "rejected_reward": rewards[~desirable].mean().item() if (~desirable).any() else float("nan"),
        "kl_reference_point": max(kl.item(), 0.0),
        "nll": nll.item(),
    }
    logs["margin"] = logs["chosen_reward"] - logs["rejected_reward"]
    return loss, logs


# ---- 3. training ----------------------------------------------------------------------------------


def train(config: Config | None = None, progress=None, *, ref_model=None, task: AdditionTask | None = None,
          samples: Samples | None = None) -> dict:
    """Align a copy of `ref_model` (the SFT model; kept frozen as pi_ref) -> history, the policy under "policy".

    The contract of every LM trainer (``rlnotes lm <name>``): ``train(config, progress=None) -> history``
    with ``before`` and ``after`` (held-out greedy and sampled accuracy of pi_ref and of the policy, on
    the same prompts) and ``seconds`` (this method's training time, SFT excluded).
    ref_model: the SFT model; when None, one is trained first with ``sft.Config(seed=config.seed,
    steps=config.sft_steps)`` and its summary is history["sft"].
    samples: answers already sampled from `ref_model` on training prompts (``sample_answers``), so that
    several runs can share one data set; by default they are sampled here (and timed).

    history, one entry per periodic evaluation (``eval_step``): the training logs averaged since the
    previous one (``loss``, ``chosen_reward``, ``rejected_reward``, ``margin``, ``reward_accuracy``,
    ``chosen_logp``, ``rejected_logp``, ``nll``; KTO logs ``kl_reference_point`` instead of the
    accuracies and log-probs), ``kl`` (KL(pi || pi_ref) on held-out prompts, see ``kl_to_reference``),
    ``greedy_accuracy_probe`` (500 held-out prompts). Then, once: ``after`` (held-out greedy and
    sampled accuracy), ``heldout_pairs_before`` / ``heldout_pairs_after`` (``preference_metrics`` on
    pairs sampled from pi_ref on held-out prompts; NaN means when none of them gave a pair) and
    ``n_heldout_pairs``, ``n_pairs`` or ``n_unpaired``, ``seconds``
    (sampling if done here + training; evaluation excluded), ``policy`` (the trained model).
    """
    # seed
    config = config or Config()
    task = task or AdditionTask()
    torch.set_num_threads(config.num_threads)
    ref_model, history = sft.reference_model(ref_model, config, task, progress)
    generator = seed_everything(config.seed)
    eos_id = task.tokenizer.eos_id
    # pi_ref, frozen: the data below are sampled from it
    ref = copy.deepcopy(ref_model).eval().requires_grad_(False)
    # data: held-out prompts for the final accuracies and the periodic probe
    heldout = subset_pairs(task.split("heldout"), config.eval_prompts, seed=0)
    probe = subset_pairs(heldout, 500, seed=1)

    # held-out pairs from pi_ref, to watch the implicit reward generalise (not timed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)
    ho_pairs = make_pairs(task, sample_answers(ref, task, heldout, config.samples_per_prompt, eval_gen), eval_gen)
    ho_ref_c = reference_logprobs(ref, ho_pairs.prompts, ho_pairs.chosen, eos_id)
    ho_ref_r = reference_logprobs(ref, ho_pairs.prompts, ho_pairs.rejected, eos_id)
    history["heldout_pairs_before"] = preference_metrics(ref, ho_ref_c, ho_ref_r, ho_pairs, config.beta, eos_id)
    history["n_heldout_pairs"] = len(ho_pairs)

    # training data: sample from pi_ref, label with the verifiable reward; reference log-probs, once
    start = time.perf_counter()
    if samples is None:
        train_pairs = subset_pairs(task.split("train"), config.train_prompts, seed=config.seed)
        samples = sample_answers(ref, task, train_pairs, config.samples_per_prompt, generator)
    if config.loss_type == "kto":
        data = make_unpaired(task, samples)
        ref_logps = reference_logprobs(ref, data.prompts, data.completions, eos_id)
        history["n_unpaired"] = len(data)
        history["desirable_share"] = float(data.desirable.float().mean())
        batch = 2 * config.batch_size  # as many answers per step as DPO sees
    else:
        data = make_pairs(task, samples, generator)
        ref_c = reference_logprobs(ref, data.prompts, data.chosen, eos_id)
        ref_r = reference_logprobs(ref, data.prompts, data.rejected, eos_id)
        history["n_pairs"] = len(data)
        batch = config.batch_size
    if len(data) == 0:
        raise ValueError("dpo.train: no training data (with binary rewards, every prompt's answers agreed)")

    # models and optimizer: the policy, a trainable copy of pi_ref with its dropout off (TRL's disable_dropout:
    # pi and pi_ref then score alike, and the first loss is ln 2); Adam, its step decayed linearly or constant
    policy = disable_dropout(copy.deepcopy(ref_model).train().requires_grad_(True))
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    decay = (lambda s: 1.0 - s / config.steps) if config.linear_decay else (lambda s: 1.0)  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    # storage: the training logs since the last evaluation (history comes from sft.reference_model)
    logs_since, seconds = [], 0.0
    for step in tqdm(range(1, config.steps + 1), desc=config.loss_type, disable=not config.progress_bar):
        # update: a minibatch of pairs (KTO: of single answers), one Adam step
        rows = torch.randint(len(data), (min(batch, len(data)),), generator=generator)
        if config.loss_type == "kto":
            loss, logs = _kto_step(policy, ref, data, ref_logps, rows, config, eos_id, generator)
        else:
            loss, logs = _dpo_step(policy, data, ref_c, ref_r, rows, config, eos_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        logs_since.append({"loss": loss.item(), **logs})

        # diagnostics, not timed: the training logs averaged since the last evaluation
        if step % config.eval_every == 0 or step == config.steps:
            seconds += time.perf_counter() - start
            record = {"eval_step": step}
            for key in logs_since[0]:
                record[key] = sum(entry[key] for entry in logs_since) / len(logs_since)
            # evaluation: KL to pi_ref and greedy accuracy on the held-out probe prompts
            record["kl"] = kl_to_reference(policy, ref, task, probe, eval_gen)
            record["greedy_accuracy_probe"] = evaluate(policy, task, probe, temperature=0.0)
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            if progress is not None:
                progress({"stage": config.loss_type, **record})
            logs_since = []
            start = time.perf_counter()
    seconds += time.perf_counter() - start

    policy.eval()
    history["before"] = sft.final_evaluation(ref, task, torch.Generator().manual_seed(config.seed + 2),
                                             config.eval_samples, heldout)
    history["after"] = sft.final_evaluation(policy, task, eval_gen, config.eval_samples, heldout)
    history["heldout_pairs_after"] = preference_metrics(policy, ho_ref_c, ho_ref_r, ho_pairs, config.beta, eos_id)
    history["seconds"] = seconds
    history["policy"] = policy
    return history
