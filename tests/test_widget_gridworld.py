"""Chapter 00 widget: the computation behind the sliders, and the view wiring."""

import pytest

from rlnotes.envs import ACTIONS
from rlnotes.widgets import gridworld_values


def _action_at(mdp, policy, cell):
    return int(policy[mdp.state_of(*cell)].argmax())


def test_default_settings_give_the_aima_policy():
    mdp, v, policy = gridworld_values.optimal_solution()
    assert v[mdp.start] == pytest.approx(0.705, abs=6e-4)
    # AIMA Fig. 17.2: in (1, 2), next to the pit, the optimal move is up (away from the pit's side)
    assert _action_at(mdp, policy, (1, 2)) == 0


def test_expensive_moves_make_the_pit_attractive():
    # AIMA Fig. 17.2(b): with a step reward below about -1.63, heading for the nearest exit, even the pit, is best
    mdp, _, policy = gridworld_values.optimal_solution(step_reward=-2.0)
    assert ACTIONS[_action_at(mdp, policy, (1, 2))] == (0, 1)  # straight right, into the pit


def test_infinite_value_is_refused():
    with pytest.raises(ValueError, match="step_reward"):
        gridworld_values.optimal_solution(step_reward=0.0, gamma=1.0)


def test_view_redraws_when_a_slider_moves():
    box = gridworld_values.view()
    step_slider = box.children[0].children[0]
    ax = box.figure.axes[0]
    before = ax.get_title()
    assert "0.705" in before  # V*(S) of the default world
    step_slider.value = -1.0
    after = ax.get_title()
    mdp, v, _ = gridworld_values.optimal_solution(step_reward=-1.0)
    assert after != before and f"{v[mdp.start]:.3f}" in after
