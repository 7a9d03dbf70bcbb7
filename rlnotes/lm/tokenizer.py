"""A character tokenizer with two special tokens: padding and end-of-sequence.

Introduced in ``06_dpo`` and reused by ``07_grpo`` and ``08_rlhf``. One character is one token, so a
learner can read every id. The specials come first: ``<pad>`` = 0 fills the right end of a batch and is
never trained on; ``<eos>`` = 1 ends an answer and IS trained on (a model that cannot stop is wrong).
"""

from __future__ import annotations

import torch

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Ids: 0 = ``<pad>``, 1 = ``<eos>``, then one id per character of `chars`, in order.

    >>> tok = CharTokenizer("0123456789+=")
    >>> tok.encode("07+5")
    [2, 9, 12, 7]
    >>> tok.decode([2, 9, 12, 7, tok.eos_id, tok.pad_id])
    '07+5'
    """

    PAD = "<pad>"
    EOS = "<eos>"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise ValueError(f"CharTokenizer: chars must be non-empty and without repeats, got {chars!r}")
        self.chars = chars
        self.pad_id, self.eos_id = 0, 1
        self.itos = [self.PAD, self.EOS, *chars]
        self.stoi = {c: i + 2 for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, eos: bool = False) -> list[int]:
        """Ids of `text`, one per character; with ``eos=True`` the EOS id is appended (an answer)."""
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"CharTokenizer.encode: text {text!r} has characters outside the vocabulary: {unknown}")
        ids = [self.stoi[c] for c in text]
        return ids + [self.eos_id] if eos else ids

    def decode(self, ids, stop_at_eos: bool = True) -> str:
        """Text of `ids` (a list or a 1-D tensor): padding is skipped; the text ends at the first EOS.

        With ``stop_at_eos=False`` the specials are written out as ``<eos>`` and ``<pad>``, to inspect a batch.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"CharTokenizer.decode: id {i} is outside [0, {self.vocab_size})")
            if stop_at_eos and i == self.eos_id:
                break
            if stop_at_eos and i == self.pad_id:
                continue
            out.append(self.itos[i])
        return "".join(out)

    def __repr__(self) -> str:
        return f"CharTokenizer({self.chars!r}, vocab_size={self.vocab_size})"
