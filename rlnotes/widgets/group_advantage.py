"""Chapter 07 widget: the advantages of one GRPO group under each scaling, beside what a critic would give.

Left: edit the rewards of G answers to one prompt and see ``advantages.group_relative`` with the std
(GRPO, DeepSeekMath), without it (Dr. GRPO) and with a leave-one-out baseline (RLOO). Right: the same
answers as token sequences, with the per-token advantage that GAE (``advantages.gae``) gives when a
critic predicts V for every prefix and the reward comes on the last token. With lambda = 1 and a
critic that predicts the group mean, GAE gives every token ``r_i - mean``: Dr. GRPO's advantage. With
lambda < 1, early tokens get less credit; and a critic has to be LEARNED, which is what GRPO saves.

Everything drawn is computed by `rlnotes.advantages`; the figure is an ipywidgets Image (see
``clip_objective`` for why not an Output widget).
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from rlnotes.advantages import gae, group_relative

__all__ = ["SCHEMES", "group_advantages", "critic_advantages", "view"]

SCHEMES = {
    "GRPO (/ std)": dict(scale=True, leave_one_out=False),
    "Dr. GRPO (no std)": dict(scale=False, leave_one_out=False),
    "RLOO (leave one out)": dict(scale=False, leave_one_out=True),
}


def group_advantages(rewards) -> dict:
    """The advantage of each of G answers under every scheme of ``SCHEMES`` -> {name: (G,) float64}.

    rewards: G >= 2 numbers, the rewards of the answers to one prompt. Raises ValueError for G < 2.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.dim() != 1 or len(r) < 2:
        raise ValueError(f"group_advantages: rewards must be G >= 2 numbers, got shape {tuple(r.shape)}")
    return {name: group_relative(r, **options) for name, options in SCHEMES.items()}


def critic_advantages(rewards, lengths, value: float, lam: float, gamma: float = 1.0) -> list[torch.Tensor]:
    """Per-token GAE advantages of each answer: a list of G tensors, the i-th of shape (lengths[i],).

    Answer i has lengths[i] tokens, reward 0 on every token but the last, which gets rewards[i]; the
    episode ends (terminated) after it. The critic predicts `value` for every prefix (a critic that
    knows nothing about the tokens; the best such constant is the expected reward, i.e. the group
    mean). Raises ValueError for a length < 1 or mismatched sizes.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if len(lengths) != len(r) or min(lengths) < 1:
        raise ValueError(f"critic_advantages: need one length >= 1 per reward, got {list(lengths)} for {len(r)} rewards")
    out = []
    for reward, T in zip(r, lengths):
        token_rewards = torch.zeros(T, dtype=torch.float64)
        token_rewards[-1] = reward  # the score comes with the last token (EOS)
        values = torch.full((T,), float(value), dtype=torch.float64)  # V(prefix before token t)
        next_values = torch.cat([values[1:], torch.zeros(1, dtype=torch.float64)])  # V after the end: 0
        terminated = torch.zeros(T, dtype=torch.float64)
        terminated[-1] = 1.0
        advantages, _ = gae(token_rewards, values, next_values, terminated, torch.zeros_like(terminated), gamma, lam)
        out.append(advantages)
    return out


def view(rewards=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0), lengths=(3, 2, 3, 4, 2, 3)):
    """One slider per answer's reward, a critic-value slider and a lambda slider; the figure shows the
    three group advantages per answer (left) and GAE's per-token advantages (right). Returns the box;
    `box.figure` is the figure, `box.data` the last {"group": ..., "critic": ...} (tests read both)."""
    reward_sliders = [widgets.FloatSlider(value=float(r), min=0.0, max=1.0, step=0.1, description=f"r{i + 1}",
                                          layout=widgets.Layout(width="220px")) for i, r in enumerate(rewards)]
    value = widgets.FloatSlider(value=float(sum(rewards) / len(rewards)), min=0.0, max=1.0, step=0.05,
                                description="critic V")
    lam = widgets.FloatSlider(value=0.95, min=0.0, max=1.0, step=0.05, description="GAE lambda")
    image = widgets.Image(format="png")
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    box = widgets.VBox([widgets.HBox(reward_sliders[:3]), widgets.HBox(reward_sliders[3:]), widgets.HBox([value, lam]), image])

    def redraw(_=None):
        r = [s.value for s in reward_sliders]
        group = group_advantages(r)
        critic = critic_advantages(r, lengths, value.value, lam.value)
        for ax in axes:
            ax.clear()
        ax = axes[0]
        G, width = len(r), 0.8 / len(SCHEMES)
        for k, (name, adv) in enumerate(group.items()):
            ax.bar([i + (k - 1) * width for i in range(G)], adv.numpy(), width, label=name)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(G), [f"y{i + 1}\nr={x:.1f}" for i, x in enumerate(r)])
        spread = float(torch.tensor(r).std())
        ax.set(ylabel="advantage (every token of the answer)",
               title=f"group-relative, no critic (group std {spread:.2f})")
        ax.legend(fontsize=8)
        ax = axes[1]
        for i, adv in enumerate(critic):
            ax.plot(range(1, len(adv) + 1), adv.numpy(), "o-", label=f"y{i + 1}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="token of the answer", ylabel="GAE advantage",
               title=f"critic V = {value.value:.2f}, lambda = {lam.value:.2f}, reward on the last token")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        box.data = {"group": group, "critic": critic}
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        image.value = png.getvalue()

    for slider in (*reward_sliders, value, lam):
        slider.observe(redraw, names="value")
    redraw()
    box.figure = fig
    box.sliders = [*reward_sliders, value, lam]
    return box
