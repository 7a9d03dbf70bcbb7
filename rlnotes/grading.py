"""Graded exercises that a call to the package cannot pass.

An exercise asks the learner to write a formula the package already has (GAE, the clipped objective, the
DPO loss), and its hidden tests compare the learner's function with the package's. Without more,
``return gae(...)[0]`` passes them. `shortcuts_refused` switches the package's answer off while the hidden
tests call the learner's function:

    expected, _ = gae(r, v, nv, term, trunc, gm, lm)      # the answer key, computed BEFORE the block
    with shortcuts_refused(gae, what="GAE"):
        got = gae_recursion(r, v, nv, term, trunc, gm, lm)
    assert torch.allclose(got, expected)

Inside the block a call of `gae` raises `ShortcutRefused`: "this exercise asks you to write GAE yourself:
rlnotes.advantages.gae is switched off while your function is graded". nbgrader's feedback shows it.

What is switched off: every reference to the function that the learner's code can reach by name,
    - the names of the notebook's namespace bound to it (``gae``, ``from rlnotes.advantages import gae as
      g``, ``my_gae = gae``); the namespace is the caller's ``globals()`` unless ``namespace=`` is given;
    - the attributes of every loaded rlnotes module bound to it: where it is defined
      (``rlnotes.advantages.gae``, ``adv.gae``, an import inside the learner's function) and where it is
      imported (``rlnotes.algos.ppo.gae``);
    - for a method given as ``Class.method`` (``AdaptiveKL.update``), the class attribute: every instance;
    - what the notebook's own functions, partials and classes captured: default arguments, keyword-only
      defaults, closure cells, ``functools.partial`` objects (``my_k3 = partial(kl_estimate, kind="k3")``),
      bound methods, class attributes, and the same inside the functions nested in them.

The rule for the package's own code: a module's globals are its attributes, so a package function that
calls a refused one raises too while the block is active (``gae`` calls ``td_target``;
``rlhf.token_advantages`` calls ``gae``; ``ppo.policy_loss`` calls ``clipped_surrogate``). That is meant:
such a function answers the exercise as well. A hidden test therefore refuses the functions that ARE the
answer, and the helpers the exercise allows (``torch.logsumexp``, ``td_target`` inside a Q-learning
update, ``lm.logprobs.token_logprobs``) keep working because they call none of them.

Not covered: references kept in containers or in an object's attributes (``tools = {"gae": gae}``), a
module reloaded, the package's source copied into the notebook. The refusal stops the shortcut a learner
takes by reflex; a deliberate one is for the teacher who reads the submission.

Everything is put back on exit, also when the block raises, including names bound to a refusal during
the block (a module imported for the first time inside it, a ``global`` assigned by the learner's code).
"""

from __future__ import annotations

import functools
import sys
import types

__all__ = ["ShortcutRefused", "Refusal", "shortcuts_refused"]


class ShortcutRefused(RuntimeError):
    """Raised by a package function that `shortcuts_refused` has switched off."""


def _is_package_module(name: str) -> bool:
    return (name == "rlnotes" or name.startswith("rlnotes.")) and name != __name__


def _qualified(function) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _refuser(function, what: str):
    """A function that raises ShortcutRefused, named like `function` (it holds the message, not `function`)."""
    message = (f"this exercise asks you to write {what} yourself: {_qualified(function)} is switched off "
               "while your function is graded")

    def refused(*args, **kwargs):
        raise ShortcutRefused(message)

    refused.__name__, refused.__qualname__ = function.__name__, function.__qualname__
    refused.__doc__ = message
    return refused


def _checked_function(index: int, function):
    """The plain function behind argument `index`, or TypeError / ValueError naming it."""
    where = f"shortcuts_refused: functions[{index}]"
    if isinstance(function, (types.MethodType, staticmethod, classmethod)):
        function = function.__func__  # `controller.update` -> AdaptiveKL.update
    if any(function is refuser for refusal in _ACTIVE for refuser in refusal._by_refuser):
        raise ValueError(f"{where} is already refused by an enclosing shortcuts_refused block")
    if isinstance(function, type):
        raise TypeError(f"{where} is the class {function.__qualname__}; refuse the method that answers the exercise "
                        f"(e.g. {function.__qualname__}.update), not the class")
    if not callable(function):
        raise TypeError(f"{where} must be a function of the rlnotes package, got {function!r} ({type(function).__name__})")
    module = getattr(function, "__module__", None) or ""
    if not isinstance(function, types.FunctionType) or not _is_package_module(module):
        name = f"{module}.{getattr(function, '__qualname__', type(function).__name__)}"
        raise TypeError(f"{where} is {name}, not a function defined in the rlnotes package: only the package's own "
                        "functions are refused (the exercise may use everything else)")
    return function


class Refusal:
    """The context manager that `shortcuts_refused` returns; usable once.

    Attributes:
        originals: {qualified name: the package's function}, e.g. {"rlnotes.advantages.gae": gae}.
    """

    def __init__(self, functions, namespace: dict, what: str):
        self.originals = {_qualified(f): f for f in functions}
        self._namespace = namespace
        self._refuser = {id(f): (f, _refuser(f, what)) for f in functions}  # id(original) -> (original, refuser)
        self._by_refuser = {refuser: f for f, refuser in self._refuser.values()}
        self._undo = []  # callables that put one reference back, in the order they were switched
        self._state = "new"

    def __repr__(self):
        return f"<shortcuts_refused {', '.join(self.originals)} ({self._state})>"

    def original(self, function):
        """The package's function behind `function` (a refusal handed out by this block, or the function itself)."""
        return self._by_refuser.get(function, function)

    # ---- what replaces a reference -----------------------------------------------------------------

    def _substitute(self, value):
        """The refusing stand-in for `value` if `value` reaches a refused function, else None."""
        if isinstance(value, types.MethodType):
            inner = self._substitute(value.__func__)
            return None if inner is None else types.MethodType(inner, value.__self__)
        if isinstance(value, (staticmethod, classmethod)):
            inner = self._substitute(value.__func__)
            return None if inner is None else type(value)(inner)
        pair = self._refuser.get(id(value))
        return pair[1] if pair is not None and pair[0] is value else None

    def _switch_item(self, mapping: dict, key) -> None:
        new = self._substitute(mapping[key])
        if new is not None:
            old = mapping[key]
            mapping[key] = new
            self._undo.append(lambda: mapping.__setitem__(key, old))

    def _switch_attribute(self, owner, name: str, old) -> None:
        new = self._substitute(old)
        if new is not None:
            setattr(owner, name, new)
            self._undo.append(lambda: setattr(owner, name, old))

    # ---- the places -----------------------------------------------------------------------------------

    def _switch_modules(self) -> None:
        for name, module in list(sys.modules.items()):
            if module is not None and _is_package_module(name):
                for key in list(vars(module)):
                    self._switch_item(vars(module), key)

    def _switch_classes(self) -> None:
        """A method given as Class.method: the attribute of the class that defines it."""
        for function, _ in self._refuser.values():
            path = function.__qualname__.split(".")
            if len(path) < 2 or "<locals>" in path:
                continue
            owner = sys.modules.get(function.__module__)
            for part in path[:-1]:
                owner = getattr(owner, part, None)
            if isinstance(owner, type) and path[-1] in vars(owner):
                self._switch_attribute(owner, path[-1], vars(owner)[path[-1]])

    def _switch_captured(self) -> None:
        """Defaults, closure cells, partials, bound methods and class attributes of the notebook's own objects."""
        ns = self._namespace
        stack, seen = list(ns.values()), set()
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, types.FunctionType) and obj.__globals__ is ns:
                stack += self._switch_function(obj)
            elif isinstance(obj, functools.partial):
                stack += self._switch_partial(obj)
            elif isinstance(obj, type) and obj.__module__ == ns.get("__name__"):
                for key, value in list(vars(obj).items()):
                    self._switch_attribute(obj, key, value)
                    stack.append(getattr(value, "__func__", value))
            elif isinstance(obj, types.MethodType):
                stack.append(obj.__func__)

    def _switch_function(self, fn: types.FunctionType) -> list:
        """Switch what `fn` captured; return the captured objects, to look inside them as well."""
        found = []
        if fn.__defaults__:
            old = fn.__defaults__
            new = tuple(self._substitute(v) or v for v in old)
            if any(a is not b for a, b in zip(new, old)):
                fn.__defaults__ = new
                self._undo.append(lambda: setattr(fn, "__defaults__", old))
            found += old
        if fn.__kwdefaults__:
            for key in list(fn.__kwdefaults__):
                self._switch_item(fn.__kwdefaults__, key)
            found += fn.__kwdefaults__.values()
        for cell in fn.__closure__ or ():
            try:
                old = cell.cell_contents
            except ValueError:  # a cell not filled yet
                continue
            new = self._substitute(old)
            if new is not None:
                cell.cell_contents = new
                self._undo.append(lambda cell=cell, old=old: setattr(cell, "cell_contents", old))
            found.append(old)
        return found

    def _switch_partial(self, p: functools.partial) -> list:
        old = (p.func, p.args, p.keywords, p.__dict__ or None)
        func = self._substitute(p.func) or p.func
        args = tuple(self._substitute(v) or v for v in p.args)
        keywords = {k: self._substitute(v) or v for k, v in p.keywords.items()}
        changed = func is not p.func or any(a is not b for a, b in zip(args, p.args)) or any(
            keywords[k] is not p.keywords[k] for k in keywords)
        if changed:
            p.__setstate__((func, args, keywords, old[3]))  # partial's attributes are read-only; its state is not
            self._undo.append(lambda: p.__setstate__(old))
        return [old[0], *old[1], *old[2].values()]

    # ---- the block --------------------------------------------------------------------------------------

    def __enter__(self) -> Refusal:
        if self._state != "new":
            raise RuntimeError("shortcuts_refused: a refusal is used once; call shortcuts_refused(...) again")
        self._state = "active"
        _ACTIVE.append(self)
        try:
            self._switch_modules()
            self._switch_classes()
            for key in list(self._namespace):
                self._switch_item(self._namespace, key)
            self._switch_captured()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info) -> bool:
        self._restore()
        return False  # an exception of the block goes on

    def _restore(self) -> None:
        try:
            while self._undo:
                self._undo.pop()()
            # Names bound to a refusal during the block: a module imported inside it, a `global` of the learner.
            places = [vars(m) for name, m in list(sys.modules.items()) if m is not None and _is_package_module(name)]
            for mapping in places + [self._namespace]:
                for key, value in list(mapping.items()):
                    if isinstance(value, types.FunctionType) and value in self._by_refuser:
                        mapping[key] = self._by_refuser[value]
        finally:
            self._state = "done"
            if self in _ACTIVE:
                _ACTIVE.remove(self)


_ACTIVE: list[Refusal] = []  # the blocks active now (nested blocks refuse different functions)


def shortcuts_refused(*functions, namespace: dict | None = None, what: str = "it") -> Refusal:
    """A `with` block in which the package's `functions` raise ShortcutRefused: for an exercise's hidden tests.

    Compute the reference answer with the package BEFORE the block (inside it, the package's function
    raises too), then call the learner's function inside it:

        expected, _ = gae(r, v, nv, term, trunc, gm, lm)
        with shortcuts_refused(gae, what="GAE"):
            got = gae_recursion(r, v, nv, term, trunc, gm, lm)
        assert torch.allclose(got, expected)

    ``with ... as refusal``: ``refusal.original(gae)`` is the package's function even inside the block.
    The module docstring says which references are switched off, the rule for the package's own callers,
    and what is not covered.

    Args:
        *functions: at least one function defined in rlnotes (``gae``, ``trpo.conjugate_gradient``), or a
            method as ``Class.method`` (``AdaptiveKL.update``); wherever else it is bound, it is the same object.
        namespace: the notebook's ``globals()``; default: the globals of the caller (in a notebook cell, the
            notebook's).
        what: what the learner writes, as the message names it ("GAE", "the conjugate gradient"); default "it".

    Raises:
        ValueError: no function, or a function already refused by an enclosing block.
        TypeError: an argument that is not a function defined in rlnotes (a class, torch.logsumexp, a
            number), a `namespace` that is not a dict, a `what` that is not a non-empty string.
    """
    if not functions:
        raise ValueError("shortcuts_refused: name at least one function to refuse, e.g. shortcuts_refused(gae)")
    checked = list(dict.fromkeys(_checked_function(i, f) for i, f in enumerate(functions)))
    if namespace is None:
        namespace = sys._getframe(1).f_globals
    if not isinstance(namespace, dict):
        raise TypeError(f"shortcuts_refused: namespace must be the notebook's globals() (a dict), "
                        f"got {type(namespace).__name__}")
    if not isinstance(what, str) or not what.strip():
        raise TypeError(f"shortcuts_refused: what must be a non-empty string such as 'GAE', got {what!r}")
    return Refusal(checked, namespace, what)
