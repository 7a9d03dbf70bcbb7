"""The house rules of ARCHITECTURE.md, checked on the source: layering, the trainers' section order, one
sampler, algorithm files that hold only their algorithm, Config help lines.

Everything here reads the code with `ast` (imports, function bodies, calls) or imports the package; no
test greps text where the syntax tree can answer.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rlnotes"
CONCEPT_MODULES = ("advantages", "objectives", "divergences", "preference")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every rlnotes module that `path` imports (absolute or relative, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from rlnotes import plots`
    return {m for m in found if m == "rlnotes" or m.startswith("rlnotes.")}


def _layer(module: str) -> str:
    """rlnotes.algos.ppo -> "algos"; rlnotes.advantages -> "advantages"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# ---- layering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("concept", CONCEPT_MODULES)
def test_concept_modules_import_no_algorithm_lm_widget_lab_or_cli(concept):
    forbidden = {"algos", "lm", "widgets", "cli", "exact", "bench", "plots"}
    imported = {_layer(m) for m in _imports(MODULES[f"rlnotes.{concept}"])}
    assert not imported & forbidden, f"rlnotes.{concept} imports {sorted(imported & forbidden)}"


def test_algos_and_lm_do_not_import_each_other():
    for name, path in MODULES.items():
        layers = {_layer(m) for m in _imports(path)}
        if _layer(name) == "algos":
            assert "lm" not in layers, f"{name} imports rlnotes.lm"
        if _layer(name) == "lm":
            assert "algos" not in layers and "exact" not in layers, f"{name} imports rlnotes.algos or rlnotes.exact"


def test_nothing_imports_a_notebook():
    assert not (ROOT / "notebooks" / "__init__.py").exists()
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "tests").glob("*.py")) + list((ROOT / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in {"notebooks", "importnb", "nbimporter"} for n in names), path


def test_the_package_imports_cleanly_in_layer_order():
    """Importing each module on its own works (no import cycle that only some orders survive)."""
    for name in MODULES:
        if name.startswith("rlnotes.lm.hf"):
            continue  # the optional `hf` extra
        importlib.import_module(name)


# ---- algorithm files hold only their algorithm -------------------------------------------------------


def test_exact_labs_live_in_rlnotes_exact_and_not_in_the_algorithm_files():
    from rlnotes.algos import reinforce, trpo
    from rlnotes.exact import policy_gradient, trust_region

    for lab in (policy_gradient, trust_region):
        for name in lab.__all__:
            assert getattr(lab, name).__module__ == lab.__name__, f"{lab.__name__}.{name} is defined elsewhere"
    assert set(reinforce.__all__) == {"Config", "Batch", "collect_episodes", "train"}
    assert not set(trpo.__all__) & set(trust_region.__all__)
    for module in (reinforce, trpo):  # defined here: the algorithm only
        tree = ast.parse(Path(module.__file__).read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & set(policy_gradient.__all__ + trust_region.__all__), module.__name__


SAMPLING_CALLS = {"multinomial", "exponential_", "searchsorted"}
# Files whose owner still has to call nets.sample_categorical (ARCHITECTURE.md, "Known gaps").
SAMPLER_GAPS = {"rlnotes/lm/model.py"}


def test_one_categorical_sampler():
    """Only rlnotes.nets.sample_categorical draws from a categorical distribution."""
    for name, path in MODULES.items():
        if name == "rlnotes.nets":
            continue
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in SAMPLING_CALLS}
        relative = str(path.relative_to(ROOT))
        if relative in SAMPLER_GAPS:
            continue
        assert not calls, f"{relative} samples with {sorted(calls)}; call rlnotes.nets.sample_categorical"


# ---- the trainers: one section order ------------------------------------------------------------------

# The documented order (ARCHITECTURE.md, "The trainer's sections"). A section comment is a comment on a
# line of its own inside `train`; it names its stage first (after any "----" rule), e.g. "# rollout: ...".
STAGES = (
    ("seed", ("seed",)),
    ("envs or data", ("envs", "data", "prompts")),
    ("nets and optimizer", ("nets and optimizer", "models and optimizer")),
    ("storage", ("storage",)),
    ("rollout", ("rollout",)),
    ("advantages", ("bootstrap and advantages", "returns and advantages", "rewards and advantages", "advantages")),
    ("flatten", ("flatten",)),
    ("update", ("update", "epochs of minibatches", "epochs", "inner steps")),
    ("diagnostics", ("diagnostics",)),
    ("evaluation", ("evaluation",)),
)
ALL = tuple(stage for stage, _ in STAGES)
SUPERVISED = ("seed", "envs or data", "nets and optimizer", "storage", "update", "diagnostics", "evaluation")
# Which stages each trainer must show; the exceptions are explained in ARCHITECTURE.md.
TRAINERS = {
    "rlnotes/algos/a2c.py": ALL,
    "rlnotes/algos/ppo.py": ALL,
    "rlnotes/algos/trpo.py": ALL,
    "rlnotes/algos/reinforce.py": ALL,
    "rlnotes/algos/dqn.py": tuple(s for s in ALL if s not in ("advantages", "flatten")),  # TD targets inside the loss
    "rlnotes/algos/qac.py": tuple(s for s in ALL if s not in ("advantages", "flatten", "update")),  # five_steps updates
    "rlnotes/lm/sft.py": SUPERVISED,
    "rlnotes/lm/dpo.py": SUPERVISED,
    "rlnotes/lm/reward_model.py": SUPERVISED,
    "rlnotes/lm/grpo.py": tuple(s for s in ALL if s != "flatten"),  # per-token tensors stay (B, L)
    "rlnotes/lm/rlhf.py": tuple(s for s in ALL if s != "flatten"),
}
# Section comments a trainer may still lack (each listed in ARCHITECTURE.md, "Known gaps"); none left.
KNOWN_GAPS: dict[str, set[str]] = {}


def _stage_of(comment: str) -> str | None:
    text = comment.lstrip("#").strip().strip("-").strip().lower()
    for stage, prefixes in STAGES:
        if any(text.startswith(p) for p in prefixes):
            return stage
    return None


def section_comments(path: Path) -> list[tuple[int, str]]:
    """(line, stage) of each section comment in the function `train` of `path`, in source order."""
    source = path.read_text()
    train = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "train")
    lines = source.splitlines()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        line = token.start[0]
        if token.type == tokenize.COMMENT and train.lineno <= line <= train.end_lineno:
            if lines[line - 1].strip().startswith("#"):  # a comment on a line of its own
                stage = _stage_of(token.string)
                if stage is not None:
                    found.append((line, stage))
    return found


def test_every_trainer_is_listed():
    with_train = {str(p.relative_to(ROOT)) for p in (PACKAGE / "algos").glob("*.py")
                  if any(isinstance(n, ast.FunctionDef) and n.name == "train" for n in ast.parse(p.read_text()).body)}
    assert with_train <= set(TRAINERS), f"add to TRAINERS: {sorted(with_train - set(TRAINERS))}"


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_trainer_sections_come_in_the_documented_order(trainer):
    found = section_comments(ROOT / trainer)
    order = [ALL.index(stage) for _, stage in found]
    assert order == sorted(order), f"{trainer}: sections out of order: {[(line, s) for line, s in found]}"
    missing = set(TRAINERS[trainer]) - {stage for _, stage in found}
    assert missing <= KNOWN_GAPS.get(trainer, set()), f"{trainer}: no section comment for {sorted(missing)}"


# ---- names and Configs ---------------------------------------------------------------------------------------

TRAINER_MODULES = ("dqn", "reinforce", "qac", "a2c", "trpo", "ppo")
SHARED_HISTORY = ("episode_steps", "episode_returns", "update_steps", "eval_steps", "eval_means", "eval_seconds")


@pytest.mark.parametrize("name", TRAINER_MODULES)
def test_trainers_share_their_history_keys_and_document_their_config(name):
    module = importlib.import_module(f"rlnotes.algos.{name}")
    assert set(SHARED_HISTORY) <= set(module.HISTORY_KEYS)
    for field in dataclasses.fields(module.Config):
        help_text = field.metadata.get("help", "")
        assert help_text, f"{name}.Config.{field.name} has no help"
        assert len(help_text) <= 90, f"{name}.Config.{field.name}: help of {len(help_text)} characters (<= 90)"


def test_a2c_and_ppo_name_their_losses_alike():
    """pi_loss, logp = policy_loss(...) in both: the diff between them shows PPO's idea, not renamings."""
    from rlnotes.algos import a2c, ppo

    for module in (a2c, ppo):
        tree = ast.parse(Path(module.__file__).read_text())
        train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
        targets = [ast.unparse(n.targets[0]) for n in ast.walk(train)
                   if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and ast.unparse(n.value.func) == "policy_loss"]
        assert targets == ["(pi_loss, logp)"], (module.__name__, targets)
