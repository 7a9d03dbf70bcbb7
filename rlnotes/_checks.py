"""Entry checks shared by the concept modules (`advantages`, `objectives`, `divergences`, `preference`).

Every message starts with the public function's name, then names the argument and says what was
allowed, e.g. ``gae: rewards (5, 2) and values (5,) differ in shape``. Bad input fails loudly here
instead of turning into a silent NaN three cells later.
"""

from __future__ import annotations

import dataclasses
import math

import torch


def shape_str(x: torch.Tensor) -> str:
    """``(5, 2)``, ``(5,)`` or ``()`` for a scalar."""
    return str(tuple(x.shape))


def in_unit_interval(fn: str, name: str, value) -> float:
    """`value` in [0, 1] (gamma, lambda); NaN is rejected too."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{fn}: {name} must be in [0, 1], got {value}")
    return value


def positive(fn: str, name: str, value) -> float:
    """`value` > 0 (eps, beta, clip ranges, targets)."""
    value = float(value)
    if not value > 0.0:
        raise ValueError(f"{fn}: {name} must be > 0, got {value}")
    return value


def non_negative(fn: str, name: str, value) -> float:
    """`value` >= 0 (loss weights)."""
    value = float(value)
    if not value >= 0.0:
        raise ValueError(f"{fn}: {name} must be >= 0, got {value}")
    return value


def one_of(fn: str, name: str, value, allowed) -> None:
    """`value` is one of the `allowed` choices (loss_type, kind, mode)."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{fn}: {name} must be one of {choices}, got {value!r}")


def same_shape(fn: str, **tensors: torch.Tensor) -> None:
    """All named tensors have exactly the first one's shape (None entries are skipped).

    Exact, not broadcast: `values` (B, 1) against `returns` (B,) would silently broadcast to (B, B).
    """
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.shape != first.shape:
            raise ValueError(f"{fn}: {first_name} {shape_str(first)} and {name} {shape_str(t)} differ in shape")


def broadcasts_to(fn: str, name: str, x: torch.Tensor, target_name: str, target: torch.Tensor) -> None:
    """`x` broadcasts to `target`'s shape without enlarging it AND without adding dimensions (or `x` is 0-d).

    Per-sequence advantages over (B, L) tokens must be (B, 1): a (B,) tensor would be aligned with the
    LAST dim, so that when B == L token j silently got sequence j's value (when B != L broadcasting
    fails, so only the square case went unnoticed). Requiring ``x.dim() == target.dim()`` refuses it
    whatever the sizes.
    """
    try:
        ok = torch.broadcast_shapes(x.shape, target.shape) == target.shape
    except RuntimeError:
        ok = False
    hint = ""
    if ok and x.dim() not in (0, target.dim()):
        ok = False
        hint = (f": {name} has {x.dim()} dim(s) and {target_name} {target.dim()}, and a (B,) tensor would be"
                " aligned with the last dim, not the first")
    if not ok:
        raise ValueError(
            f"{fn}: {name} {shape_str(x)} does not broadcast to {target_name} {shape_str(target)}{hint}"
            f" (for one value per sequence over (B, L) tokens, pass {name}[:, None] of shape (B, 1))"
        )


def broadcastable(fn: str, **tensors: torch.Tensor) -> torch.Size:
    """The named tensors broadcast together; returns the common shape."""
    try:
        return torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"{n} {shape_str(t)}" for n, t in tensors.items())
        raise ValueError(f"{fn}: shapes do not broadcast together: {shapes}") from None


def same_ndim_broadcastable(fn: str, **tensors: torch.Tensor) -> torch.Size:
    """The named tensors broadcast together AND have the same number of dims (0-d scalars excepted).

    For per-example values such as rewards: a scalar head's (B, 1) against (B,) would broadcast to
    (B, B), a silent outer product; an intended outer comparison states both dims, (B, K, 1) against
    (B, 1, K). Returns the common shape.
    """
    dims = {t.dim() for t in tensors.values() if t.dim() > 0}
    if len(dims) > 1:
        shapes = ", ".join(f"{n} {shape_str(t)}" for n, t in tensors.items())
        raise ValueError(f"{fn}: {shapes} have different numbers of dims and would broadcast silently"
                         " (squeeze a scalar head's (B, 1) output to (B,) first)")
    return broadcastable(fn, **tensors)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if it is a lower-precision float (bf16, fp16), else `x` itself (the same tensor, no copy).

    Sums of log-probs and statistics of rewards are computed in float32 whatever the model's dtype, as
    TRL upcasts (huggingface/trl PR #942): in bf16 (8 bits of mantissa) a sum of a 240-token answer's
    log-probs moves in steps of 4 nats. A float32 or float64 tensor is returned unchanged, so the
    float32 path is bit-identical with or without this call.
    """
    if x.is_floating_point() and torch.finfo(x.dtype).bits < 32:
        return x.float()
    return x


def non_empty(fn: str, name: str, x: torch.Tensor, what: str = "rows") -> None:
    """`x` has at least one element (a batch with no rows has no mean: a ValueError rather than a NaN)."""
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} {shape_str(x)} has no {what}; an empty batch has no loss or mean")


def as_float(fn: str, name: str, x, like: torch.Tensor) -> torch.Tensor:
    """A bool or float mask (terminated, truncated, mask, desirable) as 0./1. in `like`'s float dtype."""
    x = torch.as_tensor(x, device=like.device)
    if x.dtype != torch.bool and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{fn}: {name} must hold only 0/1 or True/False")
    return x.to(like.dtype)


def finite_number(fn: str, name: str, value) -> float:
    """A plain finite float (an observed KL fed to a controller)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value}")
    return value


def option(default, help: str):
    """A Config field with its one-line help (as CleanRL documents its `Args`): what `rlnotes train --help` shows.

    ``num_steps: int = option(5, "steps of each env per rollout; typical 5-20")``. Keep the help short
    (<= 90 characters, tests/test_architecture.py) and give the typical range where one exists.
    """
    return dataclasses.field(default=default, metadata={"help": help})


def check_fields(config, where: str, at_least_one=(), unit_interval=(), positive=(), non_negative=()) -> None:
    """Range checks of a training Config's fields, by name; the message names the field and the range.

    at_least_one: counts and sizes (>= 1); unit_interval: probabilities, gamma, lambda ([0, 1]);
    positive: step sizes, KL bounds (> 0); non_negative: loss weights, seeds, optional limits (>= 0).
    Used by the `__post_init__` of every `rlnotes.algos.*.Config`.
    """
    for name in at_least_one:
        if not getattr(config, name) >= 1:
            raise ValueError(f"{where}: {name} must be >= 1, got {getattr(config, name)}")
    for name in unit_interval:
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"{where}: {name} must be in [0, 1], got {getattr(config, name)}")
    for name in positive:
        if not getattr(config, name) > 0:
            raise ValueError(f"{where}: {name} must be > 0, got {getattr(config, name)}")
    for name in non_negative:
        if not getattr(config, name) >= 0:
            raise ValueError(f"{where}: {name} must be >= 0, got {getattr(config, name)}")
