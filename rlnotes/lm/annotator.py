"""A simulated annotator: the "human" whose comparisons the reward model of ``08_rlhf`` learns from.

Introduced in ``08_rlhf``. InstructGPT's labelers ranked K model answers to one prompt from best to
worst; each ranking was split into its K(K-1)/2 comparisons (Ouyang et al. 2022, arXiv:2203.02155,
section 3.5). Here the labeler is a rule with a stated taste, stated noise and a stated bias, so a
learner can check exactly what the reward model should learn and where it must go wrong:

* **taste** (noiseless): the right answer beats every wrong one; between two wrong answers, the one
  whose number is closer to the true sum wins; an answer that is not a number (no digits, a leading
  zero, another symbol, no EOS) is worst. ``taste`` returns this ordering key.
* **bias**: when both answers are wrong numbers of different lengths, with probability `short_bias`
  the annotator picks the SHORTER one instead of the closer one (a taste for short answers, like the
  length biases of real labelers, in the other direction).
* **noise**: every label is flipped with probability `flip_rate` (a slip of the mouse).

The reward model never sees ``task.reward`` (the verifiable reward); only the held-out evaluation does.
Shapes: B prompts, K answers a prompt, N tokens an answer; pairs (B, 2) operands; completions (B, N)
ids with padding after EOS (what ``sampling.sample`` returns), or (B, K, N) for a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .task import AdditionTask

__all__ = ["Annotator", "rankings_to_pairs"]


@dataclass
class Annotator:
    """A labeler with a stated taste, a bias towards short answers and a share of flipped labels.

    >>> annotator = Annotator(flip_rate=0.1, short_bias=0.2)
    """

    flip_rate: float = field(default=0.1, metadata={"help": "share of labels flipped at random, in [0, 0.5)"})
    short_bias: float = field(default=0.2,
                              metadata={"help": "probability of preferring the shorter of two wrong numbers, in [0, 1]"})
    task: AdditionTask = field(default_factory=AdditionTask, metadata={"help": "the prompts' task (tokenizer, answer lengths)"})

    def __post_init__(self):
        if not 0.0 <= self.flip_rate < 0.5:
            raise ValueError(f"Annotator: flip_rate must be in [0, 0.5), got {self.flip_rate}")
        if not 0.0 <= self.short_bias <= 1.0:
            raise ValueError(f"Annotator: short_bias must be in [0, 1], got {self.short_bias}")

    @property
    def worst(self) -> float:
        """Taste of an answer that is not a number: below -|any number - any sum|."""
        return -float(10**self.task.max_answer_len)

    # ---- reading answers ------------------------------------------------------------------------------
    def read(self, completions: torch.Tensor):
        """The number each completion writes -> (value (B,) int64, n_digits (B,) int64, is_number (B,) bool).

        A number is what the task itself writes (``task.completions``): 1 to max_answer_len digits
        without a leading zero, then EOS, then padding only. Elsewhere value is 0 and is_number False.
        """
        _check_completions("Annotator.read", completions)
        tok = self.task.tokenizer
        digit_of = torch.full((tok.vocab_size,), -1, dtype=torch.long)  # id -> digit, -1 for other ids
        for d in range(10):
            digit_of[tok.stoi[str(d)]] = d
        N = completions.shape[1]
        is_eos = completions == tok.eos_id  # (B, N)
        digits = torch.where(is_eos.any(-1), is_eos.long().argmax(-1), N)  # tokens before the first EOS: (B,)
        position = torch.arange(N)[None, :]  # (1, N)
        before = position < digits[:, None]  # (B, N)
        d = digit_of[completions]  # (B, N)
        power = (digits[:, None] - 1 - position).clamp(min=0)  # place value of each digit: (B, N)
        value = (torch.where(before, d.clamp(min=0), 0) * 10**power).sum(-1)  # (B,)
        ok = (digits >= 1) & (digits <= self.task.max_answer_len) & ((d >= 0) | ~before).all(-1)
        value = torch.where(ok, value, 0)
        canonical = _rows_equal(self.task.completions(value), completions, tok.pad_id)  # no leading zero, pad after EOS
        is_number = ok & canonical
        return torch.where(is_number, value, 0), torch.where(is_number, digits, 0), is_number

    # ---- the noiseless taste ------------------------------------------------------------------------
    def taste(self, pairs: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """The annotator's noiseless ordering key, higher is better: (B, 2), (B, N) -> (B,) float.

        ``-|answer - (a + b)|``: 0 for the right answer, -1 for an answer one off, ...; ``worst``
        (-1000 for 2 digits) for an answer that is not a number. Equal keys are ties.
        """
        _check_same_rows("Annotator.taste", pairs, completions)
        value, _, is_number = self.read(completions)
        distance = (value - pairs.sum(-1)).abs().float()  # (B,)
        return torch.where(is_number, -distance, self.worst) + 0.0  # + 0.0 turns -0.0 into 0.0

    # ---- noisy, biased labels -------------------------------------------------------------------------
    def compare(self, pairs: torch.Tensor, a: torch.Tensor, b: torch.Tensor, generator=None) -> torch.Tensor:
        """One label per row: True where the annotator prefers answer `a` to answer `b` -> (B,) bool.

        pairs (B, 2); a, b (B, N). In order: the taste decides (a tie is a coin flip); where both are
        wrong numbers of different lengths, the shorter wins instead with probability short_bias; then
        the label is flipped with probability flip_rate.
        """
        _check_same_rows("Annotator.compare", pairs, a, "a")
        _check_same_rows("Annotator.compare", pairs, b, "b")
        ta, tb = self.taste(pairs, a), self.taste(pairs, b)  # (B,) each
        coin = torch.rand(len(pairs), generator=generator) < 0.5
        a_wins = torch.where(ta == tb, coin, ta > tb)
        _, len_a, num_a = self.read(a)
        _, len_b, num_b = self.read(b)
        both_wrong = num_a & num_b & (ta < 0) & (tb < 0) & (len_a != len_b)  # (B,)
        biased = both_wrong & (torch.rand(len(pairs), generator=generator) < self.short_bias)
        a_wins = torch.where(biased, len_a < len_b, a_wins)
        flip = torch.rand(len(pairs), generator=generator) < self.flip_rate
        return a_wins ^ flip

    def rank(self, pairs: torch.Tensor, completions: torch.Tensor, generator=None) -> torch.Tensor:
        """Rank K answers to each prompt, best first -> order (B, K): order[i, 0] is the best answer's index.

        pairs (B, 2); completions (B, K, N). The annotator compares every couple once (``compare``,
        with its bias and flips) and ranks by wins; equal win counts are ordered at random. A ranking
        is transitive, so a noisy cycle (a > b > c > a) is resolved, as a labeler resolves it.
        """
        if completions.dim() != 3 or completions.shape[0] != len(pairs):
            raise ValueError(f"Annotator.rank: completions {tuple(completions.shape)} must be (B, K, N) with B = {len(pairs)}")
        B, K, _ = completions.shape
        wins = torch.zeros(B, K)
        for i in range(K):
            for j in range(i + 1, K):
                i_wins = self.compare(pairs, completions[:, i], completions[:, j], generator).float()  # (B,)
                wins[:, i] += i_wins
                wins[:, j] += 1 - i_wins
        jitter = torch.rand(B, K, generator=generator) * 0.5  # below one win: breaks ties only
        return (wins + jitter).argsort(-1, descending=True)


def rankings_to_pairs(completions: torch.Tensor, order: torch.Tensor):
    """Split each ranking of K answers into its K(K-1)/2 comparisons (InstructGPT, section 3.5).

    completions (B, K, N); order (B, K), best first (``Annotator.rank``). Returns (rows (M,), chosen
    (M, N), rejected (M, N)) with M = B * K(K-1)/2: rows[m] is the prompt of pair m; pairs come prompt
    by prompt, and within a prompt as (1st, 2nd), (1st, 3rd), ..., (2nd, 3rd), ... of the ranking.
    """
    if completions.dim() != 3:
        raise ValueError(f"rankings_to_pairs: completions must be (B, K, N), got {tuple(completions.shape)}")
    B, K, _ = completions.shape
    if order.shape != (B, K):
        raise ValueError(f"rankings_to_pairs: order {tuple(order.shape)} must be (B, K) = {(B, K)}")
    if not bool((order.sort(-1).values == torch.arange(K)).all()):
        raise ValueError("rankings_to_pairs: order must hold a permutation of 0..K-1 in every row")
    hi, lo = torch.triu_indices(K, K, offset=1)  # rank positions (i, j), i < j: (K(K-1)/2,) each
    rows = torch.arange(B).repeat_interleave(len(hi))  # (M,)
    best, worse = order[:, hi].reshape(-1), order[:, lo].reshape(-1)  # answer indices: (M,) each
    return rows, completions[rows, best], completions[rows, worse]


def _rows_equal(x: torch.Tensor, y: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Row-wise equality of two id tensors (B, Nx), (B, Ny), the narrower one widened with padding -> (B,)."""
    n = max(x.shape[1], y.shape[1])
    widen = lambda t: torch.cat([t, torch.full((len(t), n - t.shape[1]), pad_id, dtype=t.dtype)], 1)  # noqa: E731
    return (widen(x) == widen(y)).all(-1)


def _check_completions(fn: str, completions: torch.Tensor, name: str = "completions") -> None:
    if not isinstance(completions, torch.Tensor) or completions.dim() != 2 or completions.dtype != torch.long:
        shape = tuple(completions.shape) if isinstance(completions, torch.Tensor) else type(completions).__name__
        raise ValueError(f"{fn}: {name} must be a (B, N) int64 tensor of ids, got {shape}")


def _check_same_rows(fn: str, pairs: torch.Tensor, completions: torch.Tensor, name: str = "completions") -> None:
    _check_completions(fn, completions, name)
    if pairs.dim() != 2 or pairs.shape[1] != 2 or len(pairs) != len(completions):
        raise ValueError(f"{fn}: pairs {tuple(pairs.shape)} must be (B, 2) with B = {len(completions)} rows of {name}")
