"""rlnotes.grading: while a hidden test runs, the package's answer to an exercise is switched off.

Each test builds a notebook's namespace the way a kernel does (a dict whose `__name__` is `__main__`, the
learner's cells executed in it), answers an exercise by a shortcut or by hand, and runs the hidden test's
pattern: the reference first, the learner's function inside `shortcuts_refused`.
"""

from __future__ import annotations

import functools
import sys
import textwrap
import types

import pytest
import torch

import rlnotes
import rlnotes.algos.ppo
import rlnotes.algos.trpo
import rlnotes.lm.grpo
import rlnotes.lm.rlhf
import rlnotes.widgets.group_advantage
from rlnotes import advantages, divergences
from rlnotes.advantages import discounted_returns, gae, group_relative, td_target
from rlnotes.divergences import AdaptiveKL, kl_categorical, kl_estimate
from rlnotes.grading import Refusal, ShortcutRefused, shortcuts_refused

MESSAGE = "this exercise asks you to write GAE yourself: rlnotes.advantages.gae is switched off while your function is graded"

HAND_WRITTEN = '''
def gae_recursion(rewards, values, next_values, terminated, truncated, gamma, lam):
    advantages = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        target = td_target(rewards[t], next_values[t], terminated[t], gamma)  # an allowed helper
        episode_goes_on = 0.0 if (terminated[t] or truncated[t]) else 1.0
        running = target - values[t] + gamma * lam * episode_goes_on * running
        advantages[t] = running
    return advantages
'''

# Ways a learner reaches the package's GAE; each defines gae_recursion(rewards, ..., lam).
ARGS = "rewards, values, next_values, terminated, truncated, gamma, lam"
DEF = f"def gae_recursion({ARGS}"
SHORTCUTS = {
    "the notebook's name": f"{DEF}):\n    return gae({ARGS})[0]",
    "an alias": f"from rlnotes.advantages import gae as g\n{DEF}):\n    return g({ARGS})[0]",
    "the module as an alias": f"import rlnotes.advantages as adv\n{DEF}):\n    return adv.gae({ARGS})[0]",
    "the package's attribute path": f"import rlnotes\n{DEF}):\n    return rlnotes.advantages.gae({ARGS})[0]",
    "another module's import": f"from rlnotes.algos import ppo\n{DEF}):\n    return ppo.gae({ARGS})[0]",
    "an import at call time": f"{DEF}):\n    from rlnotes.advantages import gae as late\n    return late({ARGS})[0]",
    "a default argument": f"{DEF}, _package=gae):\n    return _package({ARGS})[0]",
    "a keyword-only default": f"{DEF}, *, _package=gae):\n    return _package({ARGS})[0]",
    "a closure cell": (f"def _make(package):\n    {DEF}):\n        return package({ARGS})[0]\n"
                       "    return gae_recursion\ngae_recursion = _make(gae)"),
    "a nested closure": (f"def _make(package):\n    def inner(*a):\n        return package(*a)[0]\n"
                         f"    {DEF}):\n        return inner({ARGS})\n    return gae_recursion\ngae_recursion = _make(gae)"),
    "a partial": f"import functools\n_partial = functools.partial(gae)\n{DEF}):\n    return _partial({ARGS})[0]",
    "a class attribute": f"class Tools:\n    run = staticmethod(gae)\n{DEF}):\n    return Tools.run({ARGS})[0]",
}


def notebook(source: str) -> dict:
    """A kernel's namespace after the notebook's imports and the learner's cell."""
    ns = {"__name__": "__main__"}
    exec("import torch\nfrom rlnotes.advantages import gae, td_target\n", ns)
    exec(textwrap.dedent(source), ns)
    return ns


def rollout(seed: int = 0, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    r, v, nv = torch.randn(T, generator=g), torch.randn(T, generator=g), torch.randn(T, generator=g)
    term, trunc = torch.rand(T, generator=g) < 0.2, torch.rand(T, generator=g) < 0.2
    return r, v, nv, term, trunc, 0.9, 0.8


def every_reference_to(function) -> dict:
    """{"module.name": object} of every rlnotes module attribute that is `function`, and what is there now."""
    return {f"{name}.{key}": value for name, module in list(sys.modules.items())
            if module is not None and name.startswith("rlnotes") for key, value in vars(module).items()
            if value is function}


# ---- the shortcut is refused, the hand-written answer passes ------------------------------------------


def test_the_shortcut_raises_with_the_message():
    ns = notebook(SHORTCUTS["the notebook's name"])
    assert torch.allclose(ns["gae_recursion"](*rollout()), gae(*rollout())[0])  # outside the block, it works
    with shortcuts_refused(gae, namespace=ns, what="GAE"):
        with pytest.raises(ShortcutRefused) as refused:
            ns["gae_recursion"](*rollout())
    assert str(refused.value) == MESSAGE
    assert isinstance(refused.value, RuntimeError)


def test_the_hand_written_solution_passes():
    ns = notebook(HAND_WRITTEN)
    for seed in range(4):
        expected, _ = gae(*rollout(seed))  # the reference, before the block
        with shortcuts_refused(gae, namespace=ns, what="GAE"):
            got = ns["gae_recursion"](*rollout(seed))
        assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("route", sorted(SHORTCUTS))
def test_every_route_to_the_package_function_is_refused(route):
    ns = notebook(SHORTCUTS[route])
    expected, _ = gae(*rollout())
    assert torch.allclose(ns["gae_recursion"](*rollout()), expected, atol=1e-6), "the shortcut answers outside the block"
    with shortcuts_refused(gae, namespace=ns, what="GAE"):
        with pytest.raises(ShortcutRefused, match="rlnotes.advantages.gae is switched off"):
            ns["gae_recursion"](*rollout())
    assert torch.allclose(ns["gae_recursion"](*rollout()), expected, atol=1e-6), "restored after the block"


def test_a_learner_function_defined_as_the_package_function_is_refused():
    ns = notebook("import functools\nfrom rlnotes.divergences import kl_estimate\n"
                  "my_gae = gae\nmy_k3 = functools.partial(kl_estimate, kind='k3')\n")
    lp, lq = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    with shortcuts_refused(gae, kl_estimate, namespace=ns):
        with pytest.raises(ShortcutRefused):
            ns["my_gae"](*rollout())
        with pytest.raises(ShortcutRefused, match="write it yourself: rlnotes.divergences.kl_estimate"):
            ns["my_k3"](lp, lq)
    assert ns["my_gae"] is gae and ns["my_k3"].func is kl_estimate and ns["my_k3"].keywords == {"kind": "k3"}


def test_a_method_is_refused_on_its_class_for_every_instance():
    ns = notebook("from rlnotes.divergences import AdaptiveKL\n"
                  "def my_next_beta(beta, kl, target):\n    return AdaptiveKL(target, init_beta=beta).update(kl)\n"
                  "controller = AdaptiveKL(0.01)\nstep = controller.update\n")
    update = AdaptiveKL.update
    expected = [AdaptiveKL(0.01, init_beta=1.0).update(kl) for kl in (0.02, 0.001)]
    with shortcuts_refused(AdaptiveKL.update, namespace=ns, what="the adaptive KL rule") as refusal:
        with pytest.raises(ShortcutRefused, match="rlnotes.divergences.AdaptiveKL.update is switched off"):
            ns["my_next_beta"](1.0, 0.02, 0.01)
        with pytest.raises(ShortcutRefused):
            ns["step"](0.02)  # a bound method kept from before the block
        assert refusal.original(AdaptiveKL.update) is update
        assert AdaptiveKL(0.01).target == 0.01  # the class itself still works
    assert vars(AdaptiveKL)["update"] is update and ns["step"].__func__ is update
    assert [ns["my_next_beta"](1.0, kl, 0.01) for kl in (0.02, 0.001)] == expected


# ---- restored after the block ------------------------------------------------------------------------


def _snapshot(ns):
    fn = ns["gae_recursion"]
    return (every_reference_to(gae), dict(ns), fn.__defaults__, fn.__kwdefaults__,
            [c.cell_contents for c in fn.__closure__ or ()])


@pytest.mark.parametrize("raises", [False, True], ids=["normal exit", "exception in the block"])
def test_everything_is_restored(raises):
    for route in ("the notebook's name", "a default argument", "a keyword-only default", "a closure cell"):
        ns = notebook(SHORTCUTS[route])
        before = _snapshot(ns)
        assert {f"rlnotes.{m}.gae" for m in ("advantages", "algos.ppo", "algos.trpo", "lm.rlhf", "widgets.group_advantage")} \
            <= before[0].keys()  # where it is defined, and where other modules import it
        try:
            with shortcuts_refused(gae, namespace=ns):
                assert not every_reference_to(gae), "no rlnotes module should hold the package's gae in the block"
                assert all(rlnotes.advantages.gae is getattr(m, "gae") for m in (rlnotes.algos.ppo, rlnotes.lm.rlhf))
                if raises:
                    ns["gae_recursion"](*rollout())
        except ShortcutRefused:
            assert raises
        after = _snapshot(ns)
        assert after[0].keys() == before[0].keys()
        assert all(v is gae for v in after[0].values())
        assert after[1].keys() == before[1].keys() and all(after[1][k] is before[1][k] for k in before[1])
        assert after[2] == before[2] and after[3] == before[3] and after[4] == before[4]
    assert rlnotes.advantages.gae is gae and rlnotes.algos.trpo.gae is gae
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert rlnotes.lm.rlhf.token_advantages(torch.ones(2, 3), torch.zeros(2, 3), mask)[0].shape == (2, 3)  # works again


def test_names_bound_to_the_refusal_during_the_block_are_restored():
    """A module imported for the first time inside the block, a `global` the learner's code assigned."""
    ns = notebook("def grab():\n    global kept\n    kept = gae\n")
    late = types.ModuleType("rlnotes._late_import_for_test")
    try:
        with shortcuts_refused(gae, namespace=ns):
            sys.modules[late.__name__] = late
            late.gae = rlnotes.advantages.gae  # what `from .advantages import gae` binds during the block
            ns["grab"]()
            assert ns["kept"] is not gae and late.gae is not gae
        assert late.gae is gae and ns["kept"] is gae
    finally:
        sys.modules.pop(late.__name__, None)


def test_the_default_namespace_is_the_callers_globals():
    ns = notebook(SHORTCUTS["the notebook's name"])
    ns["rollout"] = rollout
    exec("from rlnotes.grading import shortcuts_refused, ShortcutRefused\n"
         "with shortcuts_refused(gae):\n"
         "    inside = gae.__doc__\n"
         "    try:\n        gae_recursion(*rollout())\n        refused = False\n"
         "    except ShortcutRefused:\n        refused = True\n", ns)
    assert ns["refused"] and "switched off" in ns["inside"] and ns["gae"] is gae


def test_original_hands_back_the_package_function_inside_the_block():
    ns = notebook("")
    expected, _ = gae(*rollout())
    with shortcuts_refused(gae, namespace=ns) as refusal:
        assert isinstance(refusal, Refusal) and refusal.originals == {"rlnotes.advantages.gae": gae}
        assert ns["gae"] is not gae and refusal.original(ns["gae"]) is gae and refusal.original(td_target) is td_target
        assert torch.equal(refusal.original(ns["gae"])(*rollout())[0], expected)


# ---- what stays usable ------------------------------------------------------------------------------------


def test_lower_level_helpers_and_other_functions_are_not_refused():
    ns = notebook(HAND_WRITTEN)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    with shortcuts_refused(gae, namespace=ns):
        assert torch.allclose(td_target(x[0], x[1], x[2] > 0, 0.9), advantages._td_target(x[0], x[1], x[2] > 0, 0.9))
        assert discounted_returns(x[0], 0.5).shape == (4,)
        assert torch.isfinite(torch.logsumexp(x, -1)).all()
        assert group_relative(x).shape == x.shape and kl_categorical(x[0], x[1]) >= 0
        ns["gae_recursion"](*rollout())  # the hand-written answer calls td_target: allowed
    with shortcuts_refused(kl_estimate, namespace=ns):
        assert kl_categorical(x[0], x[1]) >= 0 and divergences.kl_gaussian is not None
        assert torch.allclose(rlnotes.lm.grpo.group_relative(x), group_relative(x))


def test_package_callers_of_a_refused_function_raise_while_the_block_is_active():
    """The rule: a module's globals are its attributes; gae calls td_target, rlhf.token_advantages calls gae."""
    with shortcuts_refused(td_target, namespace={}, what="the TD target"):
        with pytest.raises(ShortcutRefused, match="rlnotes.advantages.td_target"):
            gae(*rollout())
    with shortcuts_refused(group_relative, namespace={}):
        with pytest.raises(ShortcutRefused):
            rlnotes.widgets.group_advantage.group_advantages([1.0, 0.0, 1.0])
    mask = torch.ones(1, 4, dtype=torch.bool)
    with shortcuts_refused(gae, namespace={}):
        with pytest.raises(ShortcutRefused, match="rlnotes.advantages.gae"):
            rlnotes.lm.rlhf.token_advantages(torch.ones(1, 4), torch.zeros(1, 4), mask)
    assert gae(*rollout())[0].shape == (12,)


def test_nested_blocks_refuse_different_functions():
    ns = notebook("")
    with shortcuts_refused(gae, namespace=ns):
        with shortcuts_refused(kl_estimate, namespace=ns):
            with pytest.raises(ShortcutRefused):
                rlnotes.advantages.gae(*rollout())
            with pytest.raises(ShortcutRefused):
                rlnotes.lm.rlhf.kl_estimate(torch.zeros(2), torch.zeros(2))
        assert rlnotes.lm.rlhf.kl_estimate is kl_estimate
        with pytest.raises(ValueError, match=r"functions\[0\] is already refused by an enclosing"):
            shortcuts_refused(ns["gae"], namespace=ns)
    assert rlnotes.advantages.gae is gae


# ---- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((), {}, ValueError, "name at least one function"),
    ((3,), {}, TypeError, r"functions\[0\] must be a function of the rlnotes package, got 3 \(int\)"),
    ((gae, "gae"), {}, TypeError, r"functions\[1\] must be a function of the rlnotes package, got 'gae' \(str\)"),
    ((AdaptiveKL,), {}, TypeError, r"functions\[0\] is the class AdaptiveKL; refuse the method"),
    ((torch.logsumexp,), {}, TypeError, r"functions\[0\] is .*logsumexp, not a function defined in the rlnotes package"),
    ((functools.partial(gae),), {}, TypeError, r"functions\[0\] is .*partial, not a function defined in the rlnotes"),
    ((textwrap.dedent,), {}, TypeError, r"functions\[0\] is textwrap.dedent, not a function defined in the rlnotes"),
    ((gae,), {"namespace": [1]}, TypeError, "namespace must be the notebook's globals\\(\\) \\(a dict\\), got list"),
    ((gae,), {"what": ""}, TypeError, "what must be a non-empty string"),
    ((gae,), {"what": 3}, TypeError, "what must be a non-empty string"),
])
def test_bad_input_is_named(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        shortcuts_refused(*args, **kwargs)
    assert rlnotes.advantages.gae is gae


def test_a_refusal_is_used_once():
    refusal = shortcuts_refused(gae, namespace={})
    with refusal:
        pass
    with pytest.raises(RuntimeError, match="used once"):
        with refusal:
            pass
    assert rlnotes.advantages.gae is gae
