"""Small helpers shared by the notebooks and the training loops: seeding and fast mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "course_seed", "seed_offset", "fast_mode", "pick"]


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


def seed_offset() -> int:
    """The shift RLNOTES_SEED_OFFSET (default 0) applied to every seed a notebook uses.

    `make test` runs offset 0; `make test-seeds` runs the same notebooks under offsets 1 to 4, so a
    claim a notebook asserts is checked on seeds it was not written on.
    Raises ValueError when the variable is set to anything but a non-negative integer.
    """
    raw = os.environ.get("RLNOTES_SEED_OFFSET", "").strip() or "0"
    try:
        offset = int(raw)
    except ValueError:
        raise ValueError(f"RLNOTES_SEED_OFFSET must be a non-negative integer, got {raw!r}") from None
    if offset < 0:
        raise ValueError(f"RLNOTES_SEED_OFFSET must be a non-negative integer, got {offset}")
    return offset


def course_seed(k: int) -> int:
    """The course's k-th seed: k + 1000 * RLNOTES_SEED_OFFSET.

    Every notebook cell that seeds anything takes its seed from here (``seed_everything(course_seed(0))``,
    ``Config(seed=course_seed(1))``), so the same notebook runs on other seeds without edits. The offset
    is scaled by 1000 so that shifted seeds never collide with the small k a notebook uses.
    k: a non-negative int (the seed the notebook would use at offset 0). Raises ValueError otherwise.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"course_seed: k must be a non-negative int, got {k!r}")
    return k + 1000 * seed_offset()


def fast_mode() -> bool:
    """True when RLNOTES_FAST=1: CI executes every notebook with small step counts (same code path)."""
    return os.environ.get("RLNOTES_FAST", "0") not in ("", "0", "false", "False")


def pick(full, fast):
    """`full` for a learner's run, `fast` under RLNOTES_FAST=1. Only step counts should differ."""
    return fast if fast_mode() else full


def random_state() -> dict:
    """The global random state (torch, python, numpy) in tensors, lists and numbers only (torch.load(weights_only=True)
    reads it back): what a run leaves behind, for the cells after it."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]}


def set_random_state(state: dict) -> None:
    """Set the global random state that `random_state` returned."""
    torch.set_rng_state(state["torch"])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
