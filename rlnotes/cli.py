"""The `rlnotes` command line: list the chapters, train an algorithm headless and print JSON.

    rlnotes chapters                                   one line a notebook
    rlnotes train dqn --env CartPole-v1 --seed 1       JSON lines of progress, then the final result
    rlnotes bench --seeds 1000-1009                    side by side with Stable-Baselines3 (bench extra)
    rlnotes lm sft --seed 1                            the tiny GPT's SFT on the noisy teacher (chapter 06)
    rlnotes lm dpo --seed 1                            SFT, then DPO (or --loss-type ipo|hinge|robust|kto)
    rlnotes lm grpo --seed 1                           SFT, then GRPO on the verifiable reward (chapter 07)
    rlnotes lm rlhf --seed 1                           SFT, a reward model, then PPO against it (chapter 08)
    rlnotes cache info                                 the checkpoint cache of the trained models (rlnotes.cache)
    rlnotes cache clear                                empty it

Each trainable algorithm is a module `rlnotes.algos.<name>` with a `Config` dataclass (each field
carries its help text in `metadata["help"]`) and `train(config, progress=None) -> history`. The
options of `rlnotes train <name>` are built from that dataclass, so the help lives in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import sys
from pathlib import Path

__all__ = ["CHAPTERS", "ALGORITHMS", "main", "config_from_args"]

# notebook file stem -> one-line summary (tests check this against notebooks/ and their titles).
CHAPTERS = {
    "00_notation": "Notation: returns, V, Q and Q*, computed exactly on a gridworld",
    "01_value_learning": "Value learning: TD(0), SARSA and Q-learning against exact Q*, then DQN",
    "02_policy_gradient": "Policy gradient: the exact sum vs the Monte Carlo estimate, REINFORCE",
    "03_actor_critic": "Actor-critic: the five steps, then A2C with GAE",
    "04_trpo": "TRPO: measuring the distance before the update (Appendix C)",
    "05_ppo": "PPO: the clipped objective and the adaptive KL penalty",
    "06_dpo": "DPO: from the KL-regularized objective to a classification loss",
    "07_grpo": "GRPO: group-relative advantages on a verifiable reward",
    "08_rlhf": "RLHF: SFT, a reward model, and PPO against it",
}

# Where the notebooks are when the package runs from a checkout (`pip install -e .`, as `make` does).
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

# algorithm name -> module that defines Config and train(config, progress=None)
ALGORITHMS = {
    "dqn": "rlnotes.algos.dqn",
    "reinforce": "rlnotes.algos.reinforce",
    "qac": "rlnotes.algos.qac",
    "a2c": "rlnotes.algos.a2c",
    "trpo": "rlnotes.algos.trpo",
    "ppo": "rlnotes.algos.ppo",
}


# `rlnotes lm <name>`: the tiny language-model lab; each module has a Config dataclass.
LM_COMMANDS = {
    "sft": "rlnotes.lm.sft",
    "dpo": "rlnotes.lm.dpo",
    "grpo": "rlnotes.lm.grpo",
    "rlhf": "rlnotes.lm.rlhf",
}


MAX_LIST = 100  # longer lists of a history are left out of the final JSON line


def _run_lm(name: str, config) -> None:
    """Run an `rlnotes lm` command: JSON lines of progress, then the final record."""
    module = importlib.import_module(LM_COMMANDS[name])
    progress = lambda record: _print_json({"event": "progress", **record})  # noqa: E731
    history = module.train(config, progress=progress)
    # per-step and per-iteration lists are too long for one line; the periodic evaluations stay
    history = {k: v for k, v in history.items() if not (isinstance(v, list) and len(v) > MAX_LIST)}
    _print_json({"event": "final", "command": f"lm {name}", "config": dataclasses.asdict(config), **history})


def _available_algorithms() -> dict:
    found = {}
    for name, module in ALGORITHMS.items():
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real import error inside the module: show it
                raise
    return found


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "") + f" (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, dest=field.name, type=kind, default=default, help=help_text)


def config_from_args(config_cls, args: argparse.Namespace):
    """Build a Config dataclass from parsed options that share its field names."""
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _jsonable(value):
    """Keep what JSON can carry (numbers, strings, lists, dicts); drop networks and tensors."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if _is_plain(v)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_plain(value) -> bool:
    if isinstance(value, (dict, list, tuple)):
        return all(_is_plain(v) for v in (value.values() if isinstance(value, dict) else value))
    return value is None or isinstance(value, (bool, int, float, str))


def _print_json(record: dict) -> None:
    print(json.dumps(_jsonable(record)), flush=True)


def chapter_lines(notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """One line a chapter: the notebook's file stem and what it teaches; chapters whose notebook is
    not in `notebook_dir` yet are marked "(planned)" (when the folder exists at all)."""
    lines = []
    for stem, summary in CHAPTERS.items():
        planned = notebook_dir.is_dir() and not (notebook_dir / f"{stem}.ipynb").exists()
        lines.append(f"{stem:<20} {summary}" + ("  (planned)" if planned else ""))
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlnotes",
        description="Deep RL from value learning to RLHF: the course's algorithms, headless.",
        epilog="The notebooks are the course: run `make lab` in the repository, or see `rlnotes chapters`.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("chapters", help="list the course's notebooks, one line each")
    commands.add_parser("bench", add_help=False,
                        help="compare with Stable-Baselines3 / sb3-contrib (needs the bench extra; `rlnotes bench --help`)")
    train = commands.add_parser("train", help="train an algorithm and print JSON progress and the final evaluation")
    algos = train.add_subparsers(dest="algorithm", metavar="ALGORITHM")
    for name, module in _available_algorithms().items():
        sub = algos.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        _add_config_options(sub, module.Config)
    lm = commands.add_parser("lm", help="the tiny language-model lab: SFT, DPO, GRPO, RLHF on 2-digit addition, JSON output")
    lm_commands = lm.add_subparsers(dest="lm_command", metavar="LM_COMMAND")
    for name, module_name in LM_COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = lm_commands.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        _add_config_options(sub, module.Config)
    cache = commands.add_parser("cache", help="the checkpoint cache of the trained models: where it is, what it holds, "
                                              "emptying it")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND")
    cache_commands.add_parser("info", help="the cache folder and its entries (RLNOTES_CACHE_DIR moves it)")
    cache_commands.add_parser("clear", help="delete every entry of the cache folder")
    return parser


def _cache_command(name: str) -> None:
    from rlnotes import cache

    folder = cache.directory()
    if name == "clear":
        files, n_bytes = cache.clear()
        print(f"deleted {files} files ({n_bytes / 1e6:.1f} MB) from {folder}")
        return
    rows = cache.entries()
    state = "" if cache.enabled() else " (off: RLNOTES_CACHE=0)"
    print(f"{folder}{state}: {len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB")
    for row in rows:
        seconds = f"{row['seconds']:.0f} s" if isinstance(row["seconds"], (int, float)) else "?"
        print(f"  {row['path'].name:<44} {row['trainer'] or '(unreadable)':<30} trained {row['created'] or '?'} "
              f"in {seconds:>6}  {row['bytes'] / 1e6:5.1f} MB")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options: rlnotes.bench parses them
        from rlnotes import bench

        return bench.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "chapters":
        for line in chapter_lines():
            print(line)
        return 0
    if args.command == "train":
        if args.algorithm is None:
            parser.parse_args(["train", "--help"])
        module = _available_algorithms()[args.algorithm]
        config = config_from_args(module.Config, args)
        history = module.train(config, progress=lambda record: _print_json({"event": "progress", **record}))
        _print_json({"event": "final", "algorithm": args.algorithm, "config": dataclasses.asdict(config), **history})
        return 0
    if args.command == "lm":
        if args.lm_command is None:
            parser.parse_args(["lm", "--help"])
        module = importlib.import_module(LM_COMMANDS[args.lm_command])
        _run_lm(args.lm_command, config_from_args(module.Config, args))
        return 0
    if args.command == "cache":
        if args.cache_command is None:
            parser.parse_args(["cache", "--help"])
        _cache_command(args.cache_command)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
