"""Chapter 05 widget: PPO's clipped objective L^CLIP as a function of the ratio r, for A > 0 and A < 0,
with an epsilon slider; where its gradient is zero; and which samples of a batch the clip switches off.

Everything drawn is computed by `rlnotes.objectives` (`clipped_surrogate`, `clip_active`,
`clip_fraction`): the widget adds no formula of its own.

The figure is shown as an ipywidgets Image whose value is replaced on every redraw, not through an
Output widget: a headless executor (nbclient, used by the tests, the site builder and nbgrader) mimics Output widgets by
sending messages on the shell channel it is polling, which intermittently blocks a cell until the
timeout (jupyter/nbclient#312).
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from rlnotes.objectives import clip_active, clip_fraction, clipped_surrogate, probability_ratio

__all__ = ["clip_curves", "sample_batch", "batch_view", "view"]


def clip_curves(eps: float = 0.2, ratios=None) -> dict:
    """L^CLIP(r) = min(r A, clip(r, 1 - eps, 1 + eps) A) and dL/dr for A = +1 and A = -1.

    ratios: the r values to evaluate (default: 401 points in [0, 2]). Returns float64 tensors:
        ratios (K,); for sign in ("pos", "neg"):
            objective_<sign>   L^CLIP(r)          (= -objectives.clipped_surrogate, which is a loss)
            unclipped_<sign>   r A                (TRPO's surrogate, the dashed line)
            gradient_<sign>    dL^CLIP / dr       by autograd through clipped_surrogate
            flat_<sign>        bool (K,): the gradient is exactly 0 there (the clip is active)
    """
    if not eps > 0:
        raise ValueError(f"clip_curves: eps must be > 0, got {eps}")
    r = torch.linspace(0.0, 2.0, 401, dtype=torch.float64) if ratios is None else torch.as_tensor(ratios, dtype=torch.float64)
    if not bool((r > 0).all()):
        r = r.clamp(min=1e-6)  # log r must be finite: r = 0 means the new policy never takes the action
    out = {"ratios": r, "eps": eps}
    for sign, advantage in (("pos", 1.0), ("neg", -1.0)):
        ratio = r.clone().requires_grad_()
        logp, old_logp = torch.log(ratio), torch.zeros_like(r)  # r = exp(logp - 0)
        A = torch.full_like(r, advantage)
        objective = -clipped_surrogate(logp, old_logp, A, eps=eps)  # (K,)
        (gradient,) = torch.autograd.grad(objective.sum(), ratio)
        out[f"objective_{sign}"] = objective.detach()
        out[f"unclipped_{sign}"] = r * advantage
        out[f"gradient_{sign}"] = gradient
        out[f"flat_{sign}"] = clip_active(logp.detach(), old_logp, A, eps=eps)
    return out


def sample_batch(size: int = 64, spread: float = 0.25, seed: int = 0) -> dict:
    """A made-up batch as PPO sees it after a few epochs: log-ratios ~ N(0, spread^2), advantages ~ N(0, 1).

    Returns float64 tensors logp, old_logp, advantages, each (size,).
    """
    g = torch.Generator().manual_seed(seed)
    old_logp = torch.log(torch.rand(size, generator=g, dtype=torch.float64) * 0.8 + 0.1)
    logp = old_logp + spread * torch.randn(size, generator=g, dtype=torch.float64)
    return {"logp": logp, "old_logp": old_logp, "advantages": torch.randn(size, generator=g, dtype=torch.float64)}


def batch_view(eps: float, logp, old_logp, advantages) -> dict:
    """Which samples of a batch give no gradient at this epsilon.

    Returns ratios (B,), advantages (B,), clipped (bool (B,), `objectives.clip_active`: the clip is
    active and the gradient is 0), clip_fraction (the diagnostic PPO logs: ratios outside
    [1 - eps, 1 + eps], whatever the advantage's sign) and zero_gradient_fraction (the mean of clipped).
    """
    ratios = probability_ratio(logp, old_logp)
    clipped = clip_active(logp, old_logp, advantages, eps=eps)
    return {
        "ratios": ratios, "advantages": advantages, "clipped": clipped,
        "clip_fraction": float(clip_fraction(logp, old_logp, eps=eps)),
        "zero_gradient_fraction": float(clipped.double().mean()),
    }


def _draw_curve(ax, curves, sign):
    r, eps = curves["ratios"].numpy(), curves["eps"]
    flat = curves[f"flat_{sign}"].numpy()
    ax.plot(r, curves[f"unclipped_{sign}"].numpy(), "--", color="0.6", label="r A (unclipped)")
    ax.plot(r, curves[f"objective_{sign}"].numpy(), color="C0" if sign == "pos" else "C3", lw=2.5, label="L^CLIP")
    ymin, ymax = ax.get_ylim()
    ax.fill_between(r, ymin, ymax, where=flat, color="0.85", label="gradient = 0")
    ax.set_ylim(ymin, ymax)
    for x in (1 - eps, 1 + eps):
        ax.axvline(x, color="0.4", lw=0.8, ls=":")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set(xlabel="r = pi / pi_old", title=f"A {'> 0' if sign == 'pos' else '< 0'}", xlim=(r[0], r[-1]))
    ax.legend(loc="upper left" if sign == "pos" else "upper right", fontsize=8)


def view(size: int = 64, seed: int = 0):
    """An epsilon slider and a spread slider (how far the batch's ratios have moved); the figure shows
    L^CLIP for A > 0 and A < 0 with the zero-gradient regions shaded, and the batch with its clipped
    samples marked. Returns the widget box; `box.figure` is the figure and `box.data` the last
    computed {"curves": clip_curves(...), "batch": batch_view(...)} (tests read both)."""
    eps = widgets.FloatSlider(value=0.2, min=0.05, max=0.5, step=0.01, description="epsilon")
    spread = widgets.FloatSlider(value=0.25, min=0.05, max=0.6, step=0.01, description="ratio spread")
    image = widgets.Image(format="png")  # not an Output widget: see the module docstring
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    box = widgets.VBox([widgets.HBox([eps, spread]), image])

    def redraw(_=None):
        curves = clip_curves(eps.value)
        data = sample_batch(size, spread.value, seed)
        batch = batch_view(eps.value, data["logp"], data["old_logp"], data["advantages"])
        for ax in axes:
            ax.clear()
        _draw_curve(axes[0], curves, "pos")
        _draw_curve(axes[1], curves, "neg")
        ax = axes[2]
        r, A, clipped = batch["ratios"].numpy(), batch["advantages"].numpy(), batch["clipped"].numpy()
        ax.axvspan(1 - eps.value, 1 + eps.value, color="C2", alpha=0.12, label="[1 - eps, 1 + eps]")
        ax.scatter(r[~clipped], A[~clipped], s=18, color="C0", label="gives gradient")
        ax.scatter(r[clipped], A[clipped], s=40, marker="x", color="C3", label="clipped: no gradient")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set(xlabel="r", ylabel="advantage",
               title=f"batch: clip fraction {batch['clip_fraction']:.2f}, no gradient {batch['zero_gradient_fraction']:.2f}")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        box.data = {"curves": curves, "batch": batch}
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        image.value = png.getvalue()

    for slider in (eps, spread):
        slider.observe(redraw, names="value")
    redraw()
    box.figure = fig
    return box
