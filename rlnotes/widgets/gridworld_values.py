"""Chapter 00 widget: how V* and the optimal policy of the gridworld change with the step reward,
the slip probability and gamma."""

from __future__ import annotations

import io

import ipywidgets as widgets
from matplotlib.figure import Figure

from rlnotes import plots
from rlnotes.algos import tabular
from rlnotes.envs import gridworld

__all__ = ["optimal_solution", "view"]


def optimal_solution(step_reward: float = -0.04, slip: float = 0.2, gamma: float = 1.0):
    """(mdp, V* (S,), greedy optimal policy (S, A)) of the AIMA 4x3 world with these settings.

    With gamma = 1 a non-negative step reward gives the agent no reason to ever stop, so there is
    no finite V*: the function raises ValueError then.
    """
    if gamma == 1.0 and step_reward >= 0:
        raise ValueError("optimal_solution: with gamma = 1, step_reward must be < 0 (else V* is infinite)")
    mdp = gridworld(slip=slip, step_reward=step_reward)
    v, q, _ = tabular.value_iteration(mdp, gamma, tol=1e-9)
    return mdp, v, tabular.greedy_policy(q)


def view():
    """Sliders for step reward, slip and gamma; the figure shows V* and the greedy arrows.

    Returns the widget box; `box.figure` is the matplotlib figure it redraws (tests read it).
    """
    step = widgets.FloatSlider(value=-0.04, min=-2.0, max=-0.01, step=0.01, description="step reward")
    slip = widgets.FloatSlider(value=0.2, min=0.0, max=0.8, step=0.05, description="slip")
    gamma = widgets.FloatSlider(value=1.0, min=0.5, max=1.0, step=0.01, description="gamma")
    image = widgets.Image(format="png")  # not an Output widget: nbclient can hang on those (jupyter/nbclient#312)
    fig = Figure(figsize=(5, 3.6))  # not a pyplot figure: shown only inside the widget, never twice
    ax = fig.subplots()

    def redraw(_=None):
        mdp, v, policy = optimal_solution(step.value, slip.value, gamma.value)
        ax.clear()
        plots.draw_gridworld(mdp, v, policy, ax=ax, title=f"V* and the optimal policy: V*(S) = {v[mdp.start]:.3f}")
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=90)
        image.value = png.getvalue()

    for slider in (step, slip, gamma):
        slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([step, slip, gamma]), image])
    box.figure = fig
    return box
