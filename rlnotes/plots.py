"""Shared matplotlib figures: the gridworld with values, policies and Q-tables; learning curves.

Every function draws on an `ax` (made if not given) and returns it, so notebooks can compose them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle

from rlnotes.envs import ACTION_ARROWS, ACTIONS, TabularMDP

__all__ = ["draw_gridworld", "draw_q_table", "learning_curve", "flow_diagram"]


def _new_ax(ax, size=(4.5, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def _grid_frame(ax, mdp: TabularMDP, title):
    rows, cols = mdp.shape
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    for r in range(rows):
        for c in range(cols):
            if (r, c) not in mdp.cells:  # a wall
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color="0.25"))
    if title:
        ax.set_title(title)


def draw_gridworld(mdp: TabularMDP, values=None, policy=None, ax=None, title=None, fmt="{:.3f}", cmap="RdYlGn"):
    """The grid, optionally coloured by `values` (S,) with the numbers printed, and `policy` (S, A) arrows.

    Terminal cells are labelled with their reward on entry; the start cell with S.
    """
    ax = _new_ax(ax)
    _grid_frame(ax, mdp, title)
    rows, cols = mdp.shape
    if values is not None:
        grid = np.full((rows, cols), np.nan)
        values = np.asarray(values, dtype=float)
        for s, (r, c) in enumerate(mdp.cells):
            grid[r, c] = values[s]
        limit = max(1e-9, np.nanmax(np.abs(grid)))
        ax.imshow(grid, cmap=cmap, vmin=-limit, vmax=limit, extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    terminal = np.asarray(mdp.terminal)
    for s, (r, c) in enumerate(mdp.cells):
        label = []
        if s == mdp.start:
            label.append("S")
        if terminal[s]:
            live = ~np.asarray(terminal)
            into = np.asarray(mdp.R[live][:, :, s])[np.asarray(mdp.P[live][:, :, s]) > 0]  # rewards of entering s
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color="0.85"))
            label.append("end" + (f"\nr={into.max():+.2f}" if into.size else ""))
        elif values is not None:
            label.append(fmt.format(values[s]))
        if policy is not None and not terminal[s]:
            p = np.asarray(policy[s], dtype=float)
            label.append("".join(ACTION_ARROWS[a] for a in np.flatnonzero(p > p.max() - 1e-9)))
        ax.text(c, r, "\n".join(label), ha="center", va="center", fontsize=9)
    return ax


def draw_q_table(mdp: TabularMDP, q, ax=None, title=None, cmap="RdYlGn"):
    """A Q-table as a heat map: each cell split in four triangles, one per action, coloured by Q(s, a)."""
    ax = _new_ax(ax, (5, 4))
    _grid_frame(ax, mdp, title)
    q = np.asarray(q, dtype=float)
    limit = max(1e-9, np.abs(q[~np.asarray(mdp.terminal)]).max())
    colours = plt.get_cmap(cmap)
    corners = {0: [(-0.5, -0.5), (0.5, -0.5)], 1: [(0.5, -0.5), (0.5, 0.5)],
               2: [(0.5, 0.5), (-0.5, 0.5)], 3: [(-0.5, 0.5), (-0.5, -0.5)]}
    for s, (r, c) in enumerate(mdp.cells):
        if mdp.terminal[s]:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color="0.85"))
            continue
        for a, ((x0, y0), (x1, y1)) in corners.items():
            tri = [(c, r), (c + x0, r + y0), (c + x1, r + y1)]
            ax.add_patch(Polygon(tri, facecolor=colours(0.5 + 0.5 * q[s, a] / limit), edgecolor="white", lw=0.5))
            dr, dc = ACTIONS[a]
            ax.text(c + 0.3 * dc, r + 0.3 * dr, f"{q[s, a]:.2f}", ha="center", va="center", fontsize=8)
    return ax


def learning_curve(x, ys, ax=None, label=None, xlabel="step", ylabel="return", baseline=None, baseline_label=None):
    """Mean and min-max band of several runs: `ys` is a list of equally long sequences (one per seed)."""
    ax = _new_ax(ax, (5.5, 3.5))
    ys = np.asarray(ys, dtype=float).reshape(-1, len(x))
    line = ax.plot(x, ys.mean(0), label=label)[0]
    if len(ys) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    if baseline is not None:
        ax.axhline(baseline, color="0.4", ls="--", lw=1, label=baseline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if label or baseline_label:
        ax.legend()
    return ax


def flow_diagram(boxes: dict, arrows, ax=None, title=None):
    """Boxes joined by arrows: the pipelines of chapters 07 (PPO vs GRPO) and 08 (RLHF's three stages).

    boxes: {name: (x, y, text, color)} with centres in data units of a [0, 10] x [0, 4] canvas;
    arrows: (from_name, to_name) or (from_name, to_name, label). A box whose color is None is drawn
    dashed (a part that the method does NOT have). Raises KeyError naming an arrow's unknown box.
    """
    ax = _new_ax(ax, size=(10, 3.6))
    width, height = 1.55, 0.75
    for name, (x, y, text, color) in boxes.items():
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                    facecolor=color or "white", edgecolor="0.3", linestyle="-" if color else "--"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    for arrow in arrows:
        start, end, label = (*arrow, None) if len(arrow) == 2 else arrow
        for name in (start, end):
            if name not in boxes:
                raise KeyError(f"flow_diagram: arrow names unknown box {name!r}")
        (x0, y0), (x1, y1) = boxes[start][:2], boxes[end][:2]
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="0.25",
                                     shrinkA=28, shrinkB=28))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", fontsize=8, color="0.2")
    ax.set(xlim=(0, 10), ylim=(0, 4))
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax
