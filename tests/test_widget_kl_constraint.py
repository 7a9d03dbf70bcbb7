"""Chapter 04 widget: the trust region of a three-action policy against closed forms and torch.linalg."""

import math

import pytest
import torch

from rlnotes.widgets import kl_constraint


def test_fisher_is_the_closed_form_of_a_softmax():
    data = kl_constraint.kl_region(0.05)
    p = data["probs_old"]
    closed_form = (torch.diag(p) - torch.outer(p, p))[:2, :2]  # the Jacobian keeps the first two logits
    torch.testing.assert_close(data["fisher"], closed_form)


@pytest.mark.parametrize("delta", [0.01, 0.05, 0.3])
def test_steps_and_ellipse_sit_on_the_quadratic_boundary(delta):
    data = kl_constraint.kl_region(delta)
    F, g = data["fisher"], data["g"]
    quad = lambda d: 0.5 * d @ F @ d  # noqa: E731
    torch.testing.assert_close(0.5 * torch.einsum("ki,ij,kj->k", data["ellipse"], F, data["ellipse"]),
                               torch.full((200,), delta, dtype=torch.float64))
    assert quad(data["trpo_step"]).item() == pytest.approx(delta) and quad(data["gradient_step"]).item() == pytest.approx(delta)
    natural = torch.linalg.solve(F, g)
    torch.testing.assert_close(data["trpo_step"] / data["trpo_step"].norm(), natural / natural.norm())
    torch.testing.assert_close(data["gradient_step"] / data["gradient_step"].norm(), g / g.norm())
    # on the same ellipse, the natural direction promises the most (Cauchy-Schwarz in the F metric)
    assert data["linear_gain_trpo_step"] >= data["linear_gain_gradient_step"]
    assert torch.equal(data["inside"], data["kl"] <= delta)


def test_quadratic_model_is_exact_for_small_delta_and_steps_scale_with_its_root():
    small = kl_constraint.kl_region(1e-4)
    assert small["kl_trpo_step"] == pytest.approx(1e-4, rel=0.03)
    four = kl_constraint.kl_region(4e-4)
    torch.testing.assert_close(four["trpo_step"], 2 * small["trpo_step"])


def test_the_same_parameter_step_costs_different_kl_near_different_policies():
    uniform = kl_constraint.kl_region(0.05, theta_old=(0.0, 0.0))
    peaked = kl_constraint.kl_region(0.05, theta_old=(4.0, -2.0))
    assert peaked["inside"].sum() > 2 * uniform["inside"].sum()  # the KL ball is much larger in parameters
    step = torch.tensor([0.0, 1.0], dtype=torch.float64)
    kl_of = lambda data: 0.5 * step @ data["fisher"] @ step  # noqa: E731
    assert kl_of(uniform) > 10 * kl_of(peaked)


def test_view_recomputes_when_the_sliders_move():
    box = kl_constraint.view()
    delta, sharpness = box.children[0].children
    image = box.children[1]
    before, png_before = box.data["trpo_step"], bytes(image.value)
    assert png_before.startswith(b"\x89PNG")
    delta.value = 4 * delta.value  # a FloatLogSlider: 0.05 -> 0.2 (within the slider's step)
    ratio = math.sqrt(box.data["delta"] / 0.05)
    torch.testing.assert_close(box.data["trpo_step"], ratio * before)
    sharpness.value = 0.0
    torch.testing.assert_close(box.data["probs_old"], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert "0.33" in box.figure.axes[0].get_title()
    assert bytes(image.value) != png_before  # the picture shown was redrawn
