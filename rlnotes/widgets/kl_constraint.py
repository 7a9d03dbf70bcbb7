"""Chapter 04 widget: TRPO's trust region for a policy small enough to draw.

One state, three actions, logits (theta_1, theta_2, 0): the parameter space is a plane. The widget
draws, around theta_old,
    the true region        KL(pi_old || pi_theta) <= delta                 (`divergences.kl_categorical`)
    its quadratic model    1/2 d^T F d <= delta, an ellipse               (F by `trpo.fisher_vector_product`)
    the gradient step      along g, scaled to the ellipse's boundary      (steepest ascent in parameters)
    the TRPO step          along F^-1 g (`trpo.conjugate_gradient`), scaled by `trpo.max_step_size`
The objective is TRPO's surrogate with advantages A(a) of the three actions, its expectation over
the actions taken exactly: sum_a pi_old(a) r(a) A(a) = sum_a pi_theta(a) A(a).

The figure is shown as an ipywidgets Image whose value is replaced on every redraw, not through an
Output widget: a headless executor (nbclient, used by the tests, the site builder and nbgrader) mimics Output widgets by
sending messages on the shell channel it is polling, which intermittently blocks a cell until the
timeout (jupyter/nbclient#312).
"""

from __future__ import annotations

import io
import math

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from rlnotes.algos.trpo import conjugate_gradient, fisher_vector_product, flat_grad, max_step_size
from rlnotes.divergences import kl_categorical
from rlnotes.objectives import surrogate_loss

__all__ = ["logits_of", "kl_region", "draw", "view"]

F64 = torch.float64
THETA_OLD = (2.0, -1.0)
ADVANTAGES = (0.2, 1.0, -0.5)  # the best action is index 1 (logit theta_2), which pi_old rarely takes


def logits_of(theta: torch.Tensor) -> torch.Tensor:
    """(..., 2) parameters -> (..., 3) logits (theta_1, theta_2, 0): the third logit is fixed, so that
    every policy over three actions has exactly one parameter vector."""
    return torch.cat([theta, torch.zeros(*theta.shape[:-1], 1, dtype=theta.dtype)], -1)


def _surrogate(theta: torch.Tensor, old_logits: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """sum_a pi_old(a) r(a) A(a) for parameters theta (..., 2): the expectation over actions done exactly."""
    logp = torch.log_softmax(logits_of(theta), -1)  # (..., 3): log pi_theta(a) of every action a
    old_logp = torch.log_softmax(old_logits, -1).expand_as(logp)
    per_action = advantages.expand_as(logp)  # (3,) -> (..., 3): one advantage per action, stated, not broadcast
    return (old_logp.exp() * -surrogate_loss(logp, old_logp, per_action)).sum(-1)  # weights pi_old(a)


def kl_region(delta: float = 0.05, theta_old=THETA_OLD, advantages=ADVANTAGES, extent: float = 2.5,
              resolution: int = 121) -> dict:
    """Everything the widget draws, as float64 tensors.

    Returns:
        theta_old (2,), probs_old (3,)
        grid_1, grid_2 (R, R)      parameters theta_old + offsets in [-extent, extent]^2
        kl (R, R), inside (R, R)   true KL(pi_old || pi_theta) on the grid, and kl <= delta
        surrogate (R, R)           the surrogate on the grid (for its contour lines)
        g (2,), fisher (2, 2)      the surrogate's gradient and the Fisher matrix at theta_old
        ellipse (K, 2)             offsets d on the boundary 1/2 d^T F d = delta
        gradient_step, trpo_step   offsets (2,), both with 1/2 d^T F d = delta
        kl_gradient_step, kl_trpo_step                 true KL after each step
        gain_gradient_step, gain_trpo_step             true surrogate improvement of each step
        linear_gain_gradient_step, linear_gain_trpo_step    g . d, the linear model's promise
    """
    if not delta > 0:
        raise ValueError(f"kl_region: delta must be > 0, got {delta}")
    theta_old = torch.as_tensor(theta_old, dtype=F64)
    advantages = torch.as_tensor(advantages, dtype=F64)
    if theta_old.shape != (2,) or advantages.shape != (3,):
        raise ValueError(f"kl_region: theta_old must be (2,) and advantages (3,), got {tuple(theta_old.shape)} "
                         f"and {tuple(advantages.shape)}")
    old_logits = logits_of(theta_old)  # (3,)

    # the truth on a grid of parameters around theta_old
    offsets = torch.linspace(-extent, extent, resolution, dtype=F64)
    d1, d2 = torch.meshgrid(offsets, offsets, indexing="xy")  # (R, R) each
    grid = theta_old + torch.stack([d1, d2], -1)  # (R, R, 2)
    kl = kl_categorical(old_logits, logits_of(grid))  # (R, R)
    surrogate = _surrogate(grid, old_logits, advantages)  # (R, R)

    # the models at theta_old: gradient (linear) and Fisher (quadratic), as TRPO computes them
    theta = theta_old.clone().requires_grad_()
    g = flat_grad(_surrogate(theta, old_logits, advantages), [theta])  # (2,)
    fvp = fisher_vector_product(kl_categorical(old_logits, logits_of(theta)), [theta])
    fisher = torch.stack([fvp(e) for e in torch.eye(2, dtype=F64)]).detach()  # (2, 2), F e_i column by column
    natural = conjugate_gradient(fvp, g, iterations=2).detach()  # F^-1 g: exact after 2 iterations in 2-d
    trpo_step = max_step_size(natural, fisher @ natural, delta) * natural
    gradient_step = max_step_size(g, fisher @ g, delta) * g

    # the ellipse 1/2 d^T F d = delta: d = sqrt(2 delta) L^-T u for unit vectors u, F = L L^T
    L = torch.linalg.cholesky(fisher)
    angles = torch.linspace(0, 2 * math.pi, 200, dtype=F64)
    circle = torch.stack([angles.cos(), angles.sin()])  # (2, K)
    ellipse = (math.sqrt(2 * delta) * torch.linalg.solve_triangular(L.T, circle, upper=True)).T  # (K, 2)

    base = _surrogate(theta_old, old_logits, advantages)
    out = {
        "delta": delta, "theta_old": theta_old, "probs_old": torch.softmax(old_logits, -1),
        "grid_1": grid[..., 0], "grid_2": grid[..., 1], "kl": kl, "inside": kl <= delta, "surrogate": surrogate,
        "g": g.detach(), "fisher": fisher, "ellipse": ellipse, "gradient_step": gradient_step.detach(),
        "trpo_step": trpo_step.detach(),
    }
    for name in ("gradient_step", "trpo_step"):
        step = out[name]
        out[f"kl_{name}"] = float(kl_categorical(old_logits, logits_of(theta_old + step)))
        out[f"gain_{name}"] = float(_surrogate(theta_old + step, old_logits, advantages) - base)
        out[f"linear_gain_{name}"] = float(out["g"] @ step)
    return out


def draw(data: dict, ax) -> None:
    """Draw a `kl_region` result on a matplotlib axis."""
    t1, t2 = data["grid_1"].numpy(), data["grid_2"].numpy()
    theta_old = data["theta_old"].numpy()
    ax.contourf(t1, t2, data["inside"].numpy().astype(float), levels=[0.5, 1.5], colors=["C0"], alpha=0.25)
    ax.contour(t1, t2, data["kl"].numpy(), levels=[data["delta"]], colors=["C0"], linewidths=2)
    ax.contour(t1, t2, data["surrogate"].numpy(), levels=12, colors="0.7", linewidths=0.6)
    ellipse = data["ellipse"].numpy() + theta_old
    ax.plot(ellipse[:, 0], ellipse[:, 1], "--", color="C1", lw=2, label="1/2 d^T F d = delta (quadratic model)")
    ax.plot([], [], color="C0", lw=2, label="KL(pi_old || pi) = delta (true)")
    for name, color, label in (("gradient_step", "0.3", "gradient step"), ("trpo_step", "C3", "TRPO step")):
        d = data[name].numpy()
        ax.annotate("", xy=theta_old + d, xytext=theta_old, arrowprops=dict(arrowstyle="->", color=color, lw=2.2))
        ax.plot([], [], color=color, lw=2.2,
                label=f"{label}: KL {data['kl_' + name]:.3f}, gain {data['gain_' + name]:.3f}")
    ax.plot(*theta_old, "ko", ms=5)
    ax.set(xlabel="theta_1", ylabel="theta_2", aspect="equal")
    ax.legend(fontsize=8, loc="lower left")


def view():
    """Sliders for delta and for how peaked pi_old is (theta_old = sharpness * (2, -1)).

    Returns the widget box; `box.figure` is the figure and `box.data` the last `kl_region` result.
    """
    delta = widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=0, step=0.05, description="delta")
    sharpness = widgets.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="sharpness")
    image = widgets.Image(format="png")  # not an Output widget: see the module docstring
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    box = widgets.VBox([widgets.HBox([delta, sharpness]), image])

    def redraw(_=None):
        theta_old = tuple(sharpness.value * np.array(THETA_OLD))
        data = kl_region(delta.value, theta_old, extent=2.5 + 1.5 * sharpness.value)
        ax.clear()
        draw(data, ax)
        probs = ", ".join(f"{p:.2f}" for p in data["probs_old"].tolist())
        ax.set_title(f"pi_old = ({probs}), delta = {delta.value:.3f}", fontsize=10)
        box.data = data
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        image.value = png.getvalue()

    for slider in (delta, sharpness):
        slider.observe(redraw, names="value")
    redraw()
    box.figure = fig
    return box
