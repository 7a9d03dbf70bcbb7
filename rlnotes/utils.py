"""Small helpers shared by the notebooks and the training loops: seeding and fast mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "fast_mode", "pick"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch in one place; return a torch.Generator seeded the same way.

    Every notebook and every `algos.*.train` calls this once, so a run is repeatable from its seed.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything: seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fast_mode() -> bool:
    """True when RLNOTES_FAST=1: CI executes every notebook with small step counts (same code path)."""
    return os.environ.get("RLNOTES_FAST", "0") not in ("", "0", "false", "False")


def pick(full, fast):
    """`full` for a learner's run, `fast` under RLNOTES_FAST=1. Only step counts should differ."""
    return fast if fast_mode() else full
