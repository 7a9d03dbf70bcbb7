"""Chapter 05 widget: the clipped objective's curves and the batch view follow the formulas as epsilon moves."""

import math

import pytest
import torch

from rlnotes.widgets import clip_objective


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.35])
def test_curves_follow_the_formula_and_are_flat_exactly_outside_the_range(eps):
    c = clip_objective.clip_curves(eps)
    r = c["ratios"]
    torch.testing.assert_close(c["objective_pos"], torch.minimum(r, torch.full_like(r, 1 + eps)))  # A = +1
    torch.testing.assert_close(c["objective_neg"], torch.minimum(-r, torch.full_like(r, -(1 - eps))))  # A = -1
    torch.testing.assert_close(c["unclipped_pos"], r)
    # zero gradient exactly where the clip is active: r > 1 + eps for A > 0, r < 1 - eps for A < 0
    torch.testing.assert_close(c["flat_pos"], r > 1 + eps)
    torch.testing.assert_close(c["flat_neg"], r < 1 - eps)
    torch.testing.assert_close(c["gradient_pos"], torch.where(r > 1 + eps, 0.0, 1.0).double())
    torch.testing.assert_close(c["gradient_neg"], torch.where(r < 1 - eps, 0.0, -1.0).double())


def test_batch_view_marks_the_samples_without_gradient():
    batch = clip_objective.sample_batch(size=200, spread=0.3, seed=1)
    view = clip_objective.batch_view(0.2, batch["logp"], batch["old_logp"], batch["advantages"])
    r, A = view["ratios"], view["advantages"]
    expected = ((A > 0) & (r > 1.2)) | ((A < 0) & (r < 0.8))
    assert torch.equal(view["clipped"], expected) and expected.any()
    assert view["clip_fraction"] == pytest.approx(((r > 1.2) | (r < 0.8)).double().mean().item())
    assert view["zero_gradient_fraction"] < view["clip_fraction"]  # about half the outside samples keep a gradient


def test_bad_eps_is_rejected():
    with pytest.raises(ValueError, match="clip_curves: eps must be > 0"):
        clip_objective.clip_curves(0.0)


def test_view_recomputes_when_the_sliders_move():
    box = clip_objective.view()
    eps_slider, spread_slider = box.children[0].children
    image = box.children[1]
    before, png_before = box.data, bytes(image.value)
    assert png_before.startswith(b"\x89PNG")
    assert math.isclose(before["curves"]["eps"], 0.2)
    eps_slider.value = 0.4
    after = box.data
    # a wider range: fewer ratios outside it, the flat region of A > 0 starts at 1.4
    assert after["batch"]["clip_fraction"] < before["batch"]["clip_fraction"]
    r = after["curves"]["ratios"]
    assert torch.equal(after["curves"]["flat_pos"], r > 1.4)
    assert "clip fraction" in box.figure.axes[2].get_title()
    assert bytes(image.value) != png_before  # the picture shown was redrawn
    spread_slider.value = 0.05  # the batch barely moved: almost nothing outside [0.6, 1.4]
    assert box.data["batch"]["clip_fraction"] < 0.05
