"""Rollouts of the language model: sample answers from a frozen policy, score them, keep their log-probs.

The LM side's counterpart of ``rlnotes.algos.common.collect_rollout``, shared by every method of the
alignment chapters: ``dpo`` (06) samples its preference data with ``sample_answers``, ``grpo`` (07) and
``rlhf`` (08) collect a ``Rollout`` per iteration with ``collect``. Shapes are batch-first: a prompt is
a row of (B, P) ids, its answer a row of (B, N) ids, the per-token tensors are (B, L - 1) with
L = P + N (position t scores token t + 1, see ``logprobs``).

Three frozen models can meet here: the policy that samples (pi_old in PPO's and GRPO's words: the
policy before this iteration's updates), the reference (pi_ref, the SFT model, the anchor of the KL
penalty), and the policy being trained, which only ``grpo``/``rlhf`` evaluate, with gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlnotes.divergences import kl_categorical

from .logprobs import collate, masked_sum, sequence_logprobs
from .sampling import sample
from .task import AdditionTask

__all__ = ["Samples", "Rollout", "sample_answers", "collect", "subset_pairs", "reference_logprobs", "kl_to_reference"]


@dataclass
class Samples:
    """Answers sampled from a model: pairs (B, 2) operands, completions (B, k, N) ids, rewards (B, k)."""

    pairs: torch.Tensor
    completions: torch.Tensor
    rewards: torch.Tensor

    def __post_init__(self):
        B = len(self.pairs)
        if self.completions.dim() != 3 or self.completions.shape[0] != B or self.rewards.shape != self.completions.shape[:2]:
            raise ValueError(
                f"Samples: pairs {tuple(self.pairs.shape)}, completions {tuple(self.completions.shape)} and rewards"
                f" {tuple(self.rewards.shape)} must be (B, 2), (B, k, N) and (B, k)"
            )


def sample_answers(model, task: AdditionTask, pairs: torch.Tensor, k: int, generator=None, temperature: float = 1.0) -> Samples:
    """k answers per prompt from `model`, scored by the verifiable reward -> Samples.

    pairs: (B, 2) operands of B prompts. temperature 1 samples the model's own distribution (on-policy
    data). The k answers of a prompt are one GRPO group. Raises ValueError if k < 1.
    """
    if k < 1:
        raise ValueError(f"sample_answers: k must be >= 1, got {k}")
    repeated = pairs.repeat_interleave(k, dim=0)  # (B * k, 2), each prompt k times in a row
    tok = task.tokenizer
    completions = sample(model, task.prompts(repeated), task.max_new_tokens, temperature, generator, tok.eos_id, tok.pad_id)
    rewards = task.reward(repeated, completions)  # (B * k,)
    return Samples(pairs, completions.view(len(pairs), k, -1), rewards.view(len(pairs), k))


@dataclass
class Rollout:
    """One iteration's data for GRPO and RLHF: M = B * G answers, G per prompt, in groups of G rows.

    pairs (M, 2) operands; completions (M, N) ids; tokens (M, L) prompt + completion ids;
    completion_mask (M, L) bool, True on the completion's tokens including EOS (``collate``); rewards (M,);
    old_logp and ref_logp (M, L - 1) per-token log-probs of the sampled tokens under the sampling policy
    and under pi_ref (0 where masked), both at the sampling temperature; group_size G; temperature T,
    at which the answers were sampled and every log-prob is scored (the trainers score the policy being
    trained at the same T). A NaN reward marks an answer the reward function could not score.
    """

    pairs: torch.Tensor
    completions: torch.Tensor
    tokens: torch.Tensor
    completion_mask: torch.Tensor
    rewards: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    group_size: int
    temperature: float = 1.0

    @property
    def mask(self) -> torch.Tensor:
        """(M, L - 1) the completion mask shifted as ``sequence_logprobs`` returns it: aligned with old_logp."""
        return self.completion_mask[:, 1:]

    @property
    def lengths(self) -> torch.Tensor:
        """(M,) completion tokens counted by the mask (the answer's digits and its EOS, if any)."""
        return self.mask.sum(-1)

    @property
    def grouped_rewards(self) -> torch.Tensor:
        """(B, G) rewards, one row a prompt: what ``advantages.group_relative`` takes."""
        return self.rewards.view(-1, self.group_size)


def _score_in_eval_mode(model, tokens, completion_mask, temperature: float = 1.0) -> dict:
    """``sequence_logprobs`` with `model` in eval mode (no dropout), its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return sequence_logprobs(model, tokens, completion_mask, temperature)
    finally:
        model.train(was_training)


@torch.no_grad()
def collect(policy, ref, task: AdditionTask, pairs: torch.Tensor, group_size: int, generator=None,
            temperature: float = 1.0, reward_fn=None) -> Rollout:
    """Sample `group_size` answers per prompt from the frozen `policy`, score them, keep log-probs -> Rollout.

    pairs: (B, 2) prompts' operands, at least one row. reward_fn(pairs (M, 2), completions (M, N)) -> (M,)
    rewards, M = B * group_size; the verifiable reward ``task.reward`` by default (GRPO), a learned reward
    model in RLHF. A reward function that returns another number or shape of rewards raises ValueError
    (huggingface/trl issue #6533). A NaN reward is kept: it marks an answer that could not be scored;
    ``advantages.group_relative`` leaves it out of its group (GRPO), RLHF refuses it.

    The answers are sampled from softmax(logits / temperature), and both models score them at the same
    temperature, so that ``old_logp`` is the log-prob under the sampling policy and the KL to pi_ref
    compares the two tempered distributions, as TRL does (``logprobs.sequence_logprobs``); at 1 the logits
    are used as they are. Both models are evaluated in eval mode (no dropout), their modes restored.
    """
    if len(pairs) == 0:
        raise ValueError(f"collect: pairs {tuple(pairs.shape)} has no rows; a rollout needs at least one prompt")
    samples = sample_answers(policy, task, pairs, group_size, generator, temperature)
    repeated = pairs.repeat_interleave(group_size, dim=0)  # (M, 2)
    completions = samples.completions.reshape(len(repeated), -1)  # (B, G, N) -> (M, N)
    tokens, completion_mask = collate(task.prompts(repeated), completions, task.tokenizer.eos_id)  # (M, L)
    old = _score_in_eval_mode(policy, tokens, completion_mask, temperature)
    ref_out = _score_in_eval_mode(ref, tokens, completion_mask, temperature)
    if reward_fn is None:
        rewards = samples.rewards.reshape(-1)
    else:
        rewards = torch.as_tensor(reward_fn(repeated, completions))
        M = len(repeated)
        if rewards.shape != (M,):
            name = getattr(reward_fn, "__qualname__", repr(reward_fn))
            raise ValueError(f"collect: reward_fn {name} returned {rewards.numel()} rewards of shape {tuple(rewards.shape)}, "
                             f"expected {M} of shape ({M},): one per answer, {len(pairs)} prompts x {group_size} answers")
    return Rollout(repeated, completions, tokens, completion_mask, rewards.float(), old["per_token"], ref_out["per_token"],
                   group_size, temperature)


def subset_pairs(pairs: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n rows of `pairs` (B, 2) picked by `seed`, in their original order; all of them when n is 0 or >= B.

    ``subset_pairs(task.split("heldout"), config.eval_prompts)`` are the prompts every LM trainer
    evaluates on, so that chapters 06, 07 and 08 report accuracy on the same held-out prompts.
    """
    if n <= 0 or n >= len(pairs):
        return pairs
    return pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:n].sort().values]


@torch.no_grad()
def reference_logprobs(model, prompts: torch.Tensor, completions: torch.Tensor, eos_id: int = 1, batch_size: int = 4096):
    """Sequence log-probs (sums) of completions under a frozen model: (M, P), (M, N) -> (M,).

    The model is scored in eval mode (no dropout), its mode restored. M may be 0 (e.g. no held-out
    prompt gave a preference pair): the result is then an empty (0,) tensor.
    """
    out = []
    for start in range(0, max(len(prompts), 1), batch_size):  # one (possibly empty) chunk at least
        tokens, mask = collate(prompts[start : start + batch_size], completions[start : start + batch_size], eos_id)
        out.append(_score_in_eval_mode(model, tokens, mask)["sum"])
    return torch.cat(out)


@torch.no_grad()
def kl_to_reference(policy, ref, task: AdditionTask, pairs: torch.Tensor, generator=None) -> float:
    """KL(pi || pi_ref) over whole answers, averaged over the prompts `pairs` (B, 2), in nats.

    One answer y is sampled from the policy per prompt; the estimate is the EXACT per-token KL summed
    along it, ``sum_t KL(pi(.|x, y<t) || pi_ref(.|x, y<t))``. By the chain rule its expectation over y is
    the sequence-level KL, and unlike log pi(y) - log pi_ref(y) it is never negative. Both models are
    evaluated in eval mode at temperature 1. `pairs` with no rows raise ValueError.
    """
    if len(pairs) == 0:
        raise ValueError(f"kl_to_reference: pairs {tuple(pairs.shape)} has no rows; a mean over no prompts is undefined")
    tok = task.tokenizer
    prompts = task.prompts(pairs)
    completions = sample(policy, prompts, task.max_new_tokens, 1.0, generator, tok.eos_id, tok.pad_id)
    tokens, mask = collate(prompts, completions, tok.eos_id)
    out_p, out_q = _score_in_eval_mode(policy, tokens, mask), _score_in_eval_mode(ref, tokens, mask)
    per_token = kl_categorical(out_p["logits"], out_q["logits"])  # (B, L - 1)
    return float(masked_sum(per_token, out_p["mask"]).mean())
