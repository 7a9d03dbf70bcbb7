"""A task with a verifiable answer: addition of zero-padded numbers, ``"07+58="`` -> ``"65"`` then EOS.

Introduced in ``06_dpo`` and reused by ``07_grpo`` and ``08_rlhf``. Why this task:

* the reward is computed, not learned: an answer is right iff its tokens are exactly the sum's digits
  followed by EOS (``"65"`` without EOS, or ``"650"``, scores 0);
* every prompt has the same length (operands are zero-padded), so a batch of prompts needs no left
  padding and generation is one tensor operation;
* the prompts split into a training set and a held-out set, so accuracy measures generalisation;
* a deliberately imperfect teacher (a stated share of wrong demonstrations) leaves room for preference
  and RL methods to improve on supervised fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tokenizer import CharTokenizer

__all__ = ["AdditionTask", "TEACHER_OFFSETS"]

# The teacher's mistakes: the true sum plus one of these (a slip in the last digit or in the tens).
TEACHER_OFFSETS = (-10, -1, 1, 10)


@dataclass(frozen=True)
class AdditionTask:
    """All ``a + b`` with ``0 <= a, b < 10**n_digits``, split once by `split_seed`.

    Pairs are (N, 2) integer tensors of operands; prompts, answers and completions are token ids.
    """

    n_digits: int = 2
    heldout_fraction: float = 0.2
    split_seed: int = 0
    tokenizer: CharTokenizer = field(default_factory=lambda: CharTokenizer("0123456789+="), compare=False, repr=False)

    def __post_init__(self):
        if not 1 <= self.n_digits <= 4:
            raise ValueError(f"AdditionTask: n_digits must be in [1, 4], got {self.n_digits}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"AdditionTask: heldout_fraction must be in (0, 1), got {self.heldout_fraction}")

    # ---- sizes ------------------------------------------------------------------------------------
    @property
    def prompt_len(self) -> int:
        """Tokens in every prompt: two operands, '+' and '=' (6 for 2 digits)."""
        return 2 * self.n_digits + 2

    @property
    def max_answer_len(self) -> int:
        """Digits of the largest answer the teacher may write (3 for 2 digits: 99 + 99 + 10 = 208)."""
        return len(str(2 * (10**self.n_digits - 1) + max(TEACHER_OFFSETS)))

    @property
    def max_new_tokens(self) -> int:
        """Generation budget: the longest answer plus EOS."""
        return self.max_answer_len + 1

    @property
    def block_size(self) -> int:
        """Longest sequence the model must read: prompt + answer + EOS."""
        return self.prompt_len + self.max_new_tokens

    # ---- prompts and splits -------------------------------------------------------------------------
    def all_pairs(self) -> torch.Tensor:
        """Every (a, b), in a fixed order: (10**(2 * n_digits), 2) int64."""
        n = 10**self.n_digits
        a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)

    def split(self, name: str) -> torch.Tensor:
        """The pairs of split `name` ("train" or "heldout"): a fixed random partition of all_pairs()."""
        if name not in ("train", "heldout"):
            raise ValueError(f"AdditionTask.split: name must be 'train' or 'heldout', got {name!r}")
        pairs = self.all_pairs()
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.split_seed))
        n_heldout = round(self.heldout_fraction * len(pairs))
        rows = order[:n_heldout] if name == "heldout" else order[n_heldout:]
        return pairs[rows.sort().values]

    def prompt_text(self, a: int, b: int) -> str:
        """``prompt_text(7, 58) == "07+58="``."""
        return f"{a:0{self.n_digits}d}+{b:0{self.n_digits}d}="

    def prompts(self, pairs: torch.Tensor) -> torch.Tensor:
        """Prompt ids: pairs (B, 2) -> (B, prompt_len); B may be 0 (a (0, prompt_len) tensor, not (0,))."""
        self._check_pairs("prompts", pairs)
        ids = torch.tensor([self.tokenizer.encode(self.prompt_text(a, b)) for a, b in pairs.tolist()], dtype=torch.long)
        return ids.view(len(pairs), self.prompt_len)  # torch.tensor([]) alone would be (0,)

    def prompt_texts(self, pairs: torch.Tensor) -> list[str]:
        self._check_pairs("prompt_texts", pairs)
        return [self.prompt_text(a, b) for a, b in pairs.tolist()]

    # ---- answers, reward, teacher --------------------------------------------------------------------
    def completions(self, answers: torch.Tensor) -> torch.Tensor:
        """Completion ids of non-negative integer answers (B,): digits, EOS, then padding -> (B, max_new_tokens)."""
        answers = torch.as_tensor(answers, dtype=torch.long)
        if bool((answers < 0).any()) or bool((answers >= 10**self.max_answer_len).any()):
            raise ValueError(f"AdditionTask.completions: answers must be in [0, {10**self.max_answer_len}), "
                             f"got {answers.tolist()[:5]}...")
        tok = self.tokenizer
        length = 1 + sum((answers >= 10**k).long() for k in range(1, self.max_answer_len))  # digits of each answer: (B,)
        position = torch.arange(self.max_new_tokens)[None, :]  # (1, N)
        power = (length[:, None] - 1 - position).clamp(min=0)  # place value of the digit at each position: (B, N)
        digit = (answers[:, None] // 10**power) % 10  # (B, N)
        digit_ids = torch.tensor([tok.stoi[str(d)] for d in range(10)])[digit]  # (B, N)
        out = torch.where(position < length[:, None], digit_ids, tok.pad_id)
        return torch.where(position == length[:, None], tok.eos_id, out)  # EOS right after the last digit

    def correct_completions(self, pairs: torch.Tensor) -> torch.Tensor:
        """The right answer of each pair as completion ids: (B, 2) -> (B, max_new_tokens)."""
        self._check_pairs("correct_completions", pairs)
        return self.completions(pairs.sum(-1))

    def reward(self, pairs: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """1.0 where the completion is exactly the sum's digits then EOS, else 0.0: (B, 2), (B, N) -> (B,).

        `completions` are generated ids with padding after EOS (what ``sampling.sample`` returns). The
        comparison covers every position (the shorter side is widened with padding), so a missing EOS,
        an extra digit, or anything but padding after EOS all count as wrong.
        """
        self._check_pairs("reward", pairs)
        if completions.dim() != 2 or completions.shape[0] != pairs.shape[0]:
            raise ValueError(
                f"reward: completions {tuple(completions.shape)} must be (B, N) with B = {pairs.shape[0]} rows of pairs"
            )
        return self._matches(self.correct_completions(pairs), completions).float()

    def teacher(self, pairs: torch.Tensor, wrong_rate: float, generator: torch.Generator | None = None):
        """Demonstrations from an imperfect teacher -> (completions (B, max_new_tokens), wrong (B,) bool).

        With probability `wrong_rate`, independently for every demonstration, the teacher writes the sum
        plus an offset drawn uniformly from TEACHER_OFFSETS (-10, -1, +1, +10); an offset that would make
        the answer negative is flipped to positive, so a wrong answer is never the right one.
        """
        self._check_pairs("teacher", pairs)
        if not 0.0 <= wrong_rate <= 1.0:
            raise ValueError(f"teacher: wrong_rate must be in [0, 1], got {wrong_rate}")
        sums = pairs.sum(-1)  # (B,)
        wrong = torch.rand(len(pairs), generator=generator) < wrong_rate  # (B,)
        offsets = torch.tensor(TEACHER_OFFSETS)[torch.randint(len(TEACHER_OFFSETS), (len(pairs),), generator=generator)]
        offsets = torch.where(sums + offsets < 0, -offsets, offsets)  # 0 - 1 would be -1: write 1 instead
        answers = torch.where(wrong, sums + offsets, sums)
        return self.completions(answers), wrong

    def in_teacher_support(self, pairs: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """True where the completion is an answer the teacher can write (the sum, or the sum plus one of
        TEACHER_OFFSETS, then EOS): (B, 2), (B, N) -> (B,) bool.

        An SFT model puts almost no probability outside this set; a policy that drifts far from it
        (plain DPO with a small beta) produces answers no demonstration ever contained.
        """
        sums = pairs.sum(-1)
        inside = self.reward(pairs, completions).bool()
        for offset in TEACHER_OFFSETS:
            value = sums + offset
            value = torch.where(value < 0, sums - offset, value)  # the teacher's flip of negative answers
            inside |= self._matches(self.completions(value), completions)
        return inside

    def _matches(self, target: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """Row-wise exact equality of two padded id tensors of possibly different widths -> (B,) bool."""
        n = max(target.shape[1], completions.shape[1])
        pad = self.tokenizer.pad_id
        widen = lambda x: torch.cat([x, torch.full((len(x), n - x.shape[1]), pad, dtype=x.dtype)], 1)  # noqa: E731
        return (widen(target) == widen(completions)).all(-1)

    def _check_pairs(self, fn: str, pairs: torch.Tensor) -> None:
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"{fn}: pairs must have shape (B, 2), got {tuple(pairs.shape)}")
        if bool((pairs < 0).any()) or bool((pairs >= 10**self.n_digits).any()):
            raise ValueError(f"{fn}: pairs must hold operands in [0, {10**self.n_digits}), got {pairs.min()}..{pairs.max()}")
