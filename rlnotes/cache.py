"""A checkpoint cache for the course's trained models: a chapter never trains again what an earlier one trained.

Introduced in ``06_dpo``; ``07_grpo`` and ``08_rlhf`` load the SFT model, the DPO and the GRPO runs from it:

    history = cache.train(sft.train, sft.Config(seed=1), task=task)    # trains, or loads the same run

``train(trainer, config, **inputs)`` calls ``trainer(config, **inputs)`` and stores what it returns, or
returns the stored result when the same run was made before: the same history, the same weights, and the
global random state the run left behind, so that the cells after it draw the same numbers either way.

**The key** holds everything that changes the result: the trainer's name; the Config (every field but
``progress_bar``, which only draws); the inputs (a task by its class and fields, a model such as the
reference model by its class, attributes and a SHA-256 of its weights, tensors by their bytes); the
package's code (a SHA-256 of every ``rlnotes/**/*.py``: any edit invalidates every entry); and the
versions of torch, numpy and gymnasium with torch's CPU kernels (``ATEN_CPU_CAPABILITY``), which round
differently and so train along another trajectory.

**Where**: ``RLNOTES_CACHE_DIR`` if set, else the platform's user cache folder (``platformdirs``:
``$XDG_CACHE_HOME/rlnotes``, by default ``~/.cache/rlnotes`` on Linux), never the repository.
``RLNOTES_CACHE=0`` turns the cache off (every run trains). ``rlnotes cache info`` lists the entries and
``rlnotes cache clear`` deletes them. The tests use a fresh folder of their own (``tests/conftest.py``).

**Files**: one ``<trainer>-<key>.pt`` a run, written with ``torch.save`` to a temporary file in the same
folder, flushed to disk, then renamed over the entry (``os.replace``): two kernels that write at once
leave one complete file, and a crash mid-write leaves only a temporary file, never a half entry. Entries
are read with ``torch.load(weights_only=True)``: dicts, lists, numbers, strings and tensors only. A model
is stored as its class name, the arguments that rebuild it and its state dict (``REBUILD``); a dataclass
as its class name and fields. A file that cannot be read is ignored (and replaced by the run that follows).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlnotes.utils import random_state, set_random_state

__all__ = ["train", "train_many", "key", "directory", "enabled", "entries", "clear", "source_digest", "fresh_folder_for_this_run",
           "REBUILD"]

FORMAT = 1  # of the stored payload; a change here invalidates every entry
IGNORED_FIELDS = ("progress_bar",)  # Config fields that change how a run looks, never what it computes
PACKAGE = Path(__file__).resolve().parent


# ---- where, and whether ----------------------------------------------------------------------------


def enabled() -> bool:
    """False when RLNOTES_CACHE is 0, false, no or off: every run trains and nothing is stored."""
    return os.environ.get("RLNOTES_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """The cache folder: RLNOTES_CACHE_DIR, else the user cache folder of the platform (``~/.cache/rlnotes``)."""
    chosen = os.environ.get("RLNOTES_CACHE_DIR", "").strip()
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rlnotes", appauthor=False))


# ---- the key -------------------------------------------------------------------------------------------


def source_digest() -> str:
    """SHA-256 of the package's code: every rlnotes/**/*.py, by path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _trainer_name(trainer) -> str:
    return f"{trainer.__module__}.{trainer.__qualname__}"


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
    return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + raw.numpy().tobytes()).hexdigest()


def _fingerprint(value, where: str):
    """A JSON-able description of `value` that changes whenever `value` would change a run."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _fingerprint(torch.from_numpy(np.ascontiguousarray(value)), where)
    if isinstance(value, torch.Tensor):
        return {"tensor": _tensor_digest(value)}
    if isinstance(value, nn.Module):  # its weights, its mode and the attributes set by its constructor
        weights = hashlib.sha256()
        for name, tensor in value.state_dict().items():
            weights.update(name.encode() + _tensor_digest(tensor).encode())
        attributes = {k: _fingerprint(v, f"{where}.{k}") for k, v in sorted(vars(value).items()) if not k.startswith("_")}
        return {"module": _class_path(type(value)), "attributes": attributes, "weights": weights.hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": _class_path(type(value)),
                "fields": {f.name: _fingerprint(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}}
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"dict": [[_fingerprint(k, where), _fingerprint(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if type(value).__module__.startswith("rlnotes.") and hasattr(value, "__dict__"):  # a plain object (CharTokenizer)
        return {"object": _class_path(type(value)), "vars": _fingerprint(dict(sorted(vars(value).items())), where)}
    raise TypeError(f"cache.train: cannot put {where} ({type(value).__name__}) in the key; "
                    "pass it through the Config, or call the trainer without the cache")


def key(trainer, config, **inputs) -> str:
    """The cache key of ``trainer(config, **inputs)``: a SHA-256 of everything that changes its result.

    Config: every field but ``progress_bar``. Raises TypeError if `config` is not a dataclass or an
    input cannot be described (see the module docstring for what goes in).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"cache.train: config must be a Config dataclass instance, got {type(config).__name__}")
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in IGNORED_FIELDS}
    description = {
        "format": FORMAT,
        "trainer": _trainer_name(trainer),
        "config": {"class": _class_path(type(config)), "fields": _fingerprint(fields, "config")},
        "inputs": {name: _fingerprint(value, name) for name, value in sorted(inputs.items())},
        "code": source_digest(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "gymnasium": _version("gymnasium")},
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


# ---- storing a history: only what torch.load(weights_only=True) reads back ---------------------------------


def _gpt_spec(model) -> dict:
    head = model.lm_head
    return {"config": dataclasses.asdict(model.config), "head": [head.out_features, head.bias is not None]}


def _build_gpt(spec: dict):
    from rlnotes.lm.model import GPT, GPTConfig

    model = GPT(GPTConfig(**spec["config"]))
    out_features, bias = spec["head"]
    if (out_features, bias) != (model.lm_head.out_features, model.lm_head.bias is not None):  # a scalar head
        model.lm_head = nn.Linear(model.config.n_embd, out_features, bias=bias)
    return model


def _build_reward_model(spec: dict):
    from rlnotes.lm.reward_model import RewardModel

    return RewardModel(_build_gpt(spec["body"]), spec["readout"], spec["eos_id"])


def _build_value_model(spec: dict):
    from rlnotes.lm.rlhf import ValueModel

    return ValueModel(_build_gpt(spec["body"]))


def _build_tokenizer(spec: dict):
    from rlnotes.lm.tokenizer import CharTokenizer

    return CharTokenizer(spec["chars"])


# class -> (the arguments that rebuild an object of it, the function that rebuilds it from them); a model's
# weights are loaded into the rebuilt one afterwards. A history holding an object of another class is not stored.
REBUILD = {
    "rlnotes.lm.model.GPT": (_gpt_spec, _build_gpt),
    "rlnotes.lm.reward_model.RewardModel": (
        lambda rm: {"body": _gpt_spec(rm.body), "readout": rm.readout, "eos_id": rm.eos_id}, _build_reward_model),
    "rlnotes.lm.rlhf.ValueModel": (lambda critic: {"body": _gpt_spec(critic.body)}, _build_value_model),
    "rlnotes.lm.tokenizer.CharTokenizer": (lambda tok: {"chars": tok.chars}, _build_tokenizer),
}


class Unstorable(TypeError):
    """A history holds an object the cache cannot store as tensors and plain values."""


def _pack(value, inputs: dict, where: str):
    """`value` as dicts, lists, numbers, strings and tensors; containers and objects tagged with their kind."""
    for name, given in inputs.items():  # an input handed back (RLHF's reward model): stored by its name
        if value is given and not isinstance(value, (bool, int, float, str, type(None))):
            return {"kind": "input", "name": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"kind": "ndarray", "value": torch.from_numpy(np.array(value))}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        return {"kind": type(value).__name__, "items": [_pack(v, inputs, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        items = [[_pack(k, inputs, where), _pack(v, inputs, f"{where}[{k!r}]")] for k, v in value.items()]
        return {"kind": "dict", "items": items}
    name = _class_path(type(value))
    if name in REBUILD:
        packed = {"kind": "object", "class": name, "spec": _pack(REBUILD[name][0](value), {}, where)}
        if isinstance(value, nn.Module):
            packed.update(state={k: v.detach().cpu().clone() for k, v in value.state_dict().items()}, modes=_modes(value))
        return packed
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and name.startswith("rlnotes."):
        fields = {f.name: _pack(getattr(value, f.name), inputs, f"{where}.{f.name}") for f in dataclasses.fields(value) if f.init}
        return {"kind": "dataclass", "class": name, "fields": fields}
    raise Unstorable(f"{where} is a {name}, which the cache cannot store (cache.REBUILD lists what it can)")


def _class(name: str):
    if not name.startswith("rlnotes."):
        raise ValueError(f"cache: an entry names the class {name!r}, outside rlnotes")
    module, _, qualname = name.rpartition(".")
    return getattr(importlib.import_module(module), qualname)


def _unpack(value, inputs: dict):
    if not isinstance(value, dict):
        return value  # a number, a string, None or a tensor
    kind = value["kind"]
    if kind == "input":
        return inputs[value["name"]]
    if kind == "ndarray":
        return value["value"].numpy()
    if kind in ("list", "tuple"):
        items = [_unpack(v, inputs) for v in value["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {_unpack(k, inputs): _unpack(v, inputs) for k, v in value["items"]}
    if kind == "dataclass":
        return _class(value["class"])(**{k: _unpack(v, inputs) for k, v in value["fields"].items()})
    if kind == "object":
        obj = REBUILD[value["class"]][1](_unpack(value["spec"], {}))
        if isinstance(obj, nn.Module):
            obj.load_state_dict(value["state"])
            _set_modes(obj, value["modes"])
        return obj
    raise ValueError(f"cache: unknown kind {kind!r} in an entry")


def _modes(module: nn.Module) -> dict:
    """train/eval mode of every submodule and requires_grad of every parameter: what a trainer may leave changed."""
    return {"training": [m.training for m in module.modules()],
            "requires_grad": [p.requires_grad for p in module.parameters()]}


def _set_modes(module: nn.Module, modes: dict) -> None:
    for m, training in zip(module.modules(), modes["training"]):
        m.training = training
    for p, requires_grad in zip(module.parameters(), modes["requires_grad"]):
        p.requires_grad_(requires_grad)


# ---- reading and writing entries -----------------------------------------------------------------------------


def _short_name(trainer) -> str:
    """rlnotes.lm.sft.train -> sft.train"""
    return f"{trainer.__module__.rpartition('.')[2]}.{trainer.__qualname__}"


def _shown(path: Path) -> str:
    """`path` with the home folder written ~."""
    home = str(Path.home())
    return "~" + str(path)[len(home):] if str(path).startswith(home + os.sep) else str(path)


def _path(trainer, digest: str) -> Path:
    return directory() / f"{trainer.__module__.rpartition('.')[2]}-{digest[:32]}.pt"


def _write(path: Path, payload: dict) -> None:
    """torch.save to a temporary file beside `path`, flushed to disk, then renamed over `path` (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read(path: Path, digest: str) -> dict | None:
    """The payload stored at `path` for key `digest`; None if there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT or payload.get("key") != digest:
            raise ValueError("written for another key or format")
        return payload
    except Exception as error:  # a truncated or damaged file, whatever the reason: a miss
        warnings.warn(f"cache: ignoring {path} ({type(error).__name__}: {error}); training again", stacklevel=3)
        return None


def train(trainer, config, *, progress=None, quiet: bool = False, **inputs) -> dict:
    """``trainer(config, progress=progress, **inputs)``, or the history it returned before -> history.

    trainer: a trainer function such as ``sft.train`` (``dpo.train``, ``grpo.train``, ``reward_model.train``,
    ``rlhf.train``). config: its Config. inputs: its keyword inputs (``task``, ``ref_model``, ...), all part
    of the key. On a hit the models in the history are rebuilt and their weights loaded, the modes and
    requires_grad flags of the input models are set as the run left them, and the global random state
    (torch, numpy, python) is the one the run ended with; one line says where the run came from, unless
    `quiet`. On a miss the trainer runs (with its progress bar if the Config asks for one) and the history
    is stored; a history the cache cannot store (see ``REBUILD``) is returned with a warning, unstored.
    """
    digest = key(trainer, config, **inputs)
    path = _path(trainer, digest)
    payload = _read(path, digest) if enabled() else None
    if payload is not None:
        try:
            history = _unpack(payload["history"], inputs)
            for name, modes in payload["input_modes"].items():
                _set_modes(inputs[name], modes)
            set_random_state(payload["random_state"])
        except Exception as error:
            warnings.warn(f"cache: ignoring {path} ({type(error).__name__}: {error}); training again", stacklevel=2)
        else:
            if hasattr(config, "num_threads"):
                torch.set_num_threads(config.num_threads)  # as the trainer would have
            if not quiet:
                seconds = payload["about"].get("seconds")
                trained = f" (trained in {seconds:.0f} s)" if isinstance(seconds, (int, float)) else ""
                print(f"{_short_name(trainer)}: the same run was trained before{trained}; loaded from {_shown(path)}")
            return history

    history = trainer(config, progress=progress, **inputs)
    if not enabled():
        return history
    try:
        payload = {
            "format": FORMAT, "key": digest,
            "about": {"trainer": _trainer_name(trainer), "config": _pack(dataclasses.asdict(config), {}, "config"),
                      "seconds": history.get("seconds") if isinstance(history.get("seconds"), (int, float)) else None,
                      "created": datetime.datetime.now().isoformat(timespec="seconds")},
            "history": _pack(history, inputs, "history"),
            "input_modes": {name: _modes(value) for name, value in inputs.items() if isinstance(value, nn.Module)},
            "random_state": random_state(),
        }
        _write(path, payload)
    except (Unstorable, OSError) as error:
        warnings.warn(f"cache: {_trainer_name(trainer)} not stored ({error})", stacklevel=2)
    return history


def train_many(trainer, configs, /, *, workers: int | None = None, run_inputs: list[dict] | None = None, **inputs) -> list:
    """``[train(trainer, c, **inputs) for c in configs]``, the runs not in the cache trained side by side.

    run_inputs: one dict a run, added to `inputs` (e.g. each run's reward model). The missing runs go to
    ``parallel.train_many`` (one process a core, one progress bar), each worker storing its run here; then
    every run is loaded from the cache, in order, exactly as ``train`` loads a hit (the last one sets the
    global random state and the input models' modes, as after the loop). With the cache off, one worker
    or one missing run, it is the loop itself.
    """
    from rlnotes import parallel

    configs, each = parallel.runs_with_inputs(configs, run_inputs, inputs, "cache.train_many")
    if not enabled():
        return [train(trainer, c, **kwargs) for c, kwargs in zip(configs, each)]
    paths = [_path(trainer, key(trainer, c, **kwargs)) for c, kwargs in zip(configs, each)]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    workers = parallel.default_workers(len(missing)) if workers is None else workers
    if workers == 1 or len(missing) < 2:
        return [train(trainer, c, **kwargs) for c, kwargs in zip(configs, each)]
    if len(missing) < len(configs):
        print(f"{_short_name(trainer)}: {len(configs) - len(missing)} of the {len(configs)} runs were trained before; "
              f"loaded from {_shown(directory())}")
    parallel.train_many(_train_and_store, [configs[i] for i in missing], workers=workers,
                        desc=f"{_short_name(trainer)}: {len(missing)} runs, {workers} processes",
                        run_inputs=[{"trainer": trainer, **each[i]} for i in missing])
    lost = [i for i in missing if not paths[i].exists()]
    if lost:  # a run a worker could not store (see REBUILD), or inputs that key differently once copied
        warnings.warn(f"cache: runs {lost} trained in a worker are not in the cache; training them here", stacklevel=2)
    return [train(trainer, c, quiet=True, **kwargs) for c, kwargs in zip(configs, each)]


def _train_and_store(config, *, trainer, **inputs) -> None:
    """In a worker of ``train_many``: train one run into the cache (nothing is sent back)."""
    train(trainer, config, quiet=True, **inputs)


# ---- what is there, and emptying it -----------------------------------------------------------------------


def entries() -> list[dict]:
    """The stored runs, oldest first: path, trainer, created, seconds (training), bytes; unreadable files too."""
    folder = directory()
    found = []
    for path in sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        row = {"path": path, "bytes": path.stat().st_size, "trainer": None, "created": None, "seconds": None}
        with contextlib.suppress(Exception):
            about = torch.load(path, map_location="cpu", weights_only=True)["about"]
            row.update(trainer=about["trainer"], created=about["created"], seconds=about["seconds"])
        found.append(row)
    return found


def clear() -> tuple[int, int]:
    """Delete every entry (``*.pt``) and leftover temporary file (``.*.tmp``) of the cache folder -> (files, bytes).

    Only these files: a folder chosen with RLNOTES_CACHE_DIR keeps anything else it holds.
    """
    folder = directory()
    files = n_bytes = 0
    if folder.is_dir():
        for path in [*folder.glob("*.pt"), *folder.glob(".*.tmp")]:
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                files, n_bytes = files + 1, n_bytes + size
    return files, n_bytes


# ---- for tests and CI: a folder of the run's own ----------------------------------------------------------------


def fresh_folder_for_this_run(prefix: str = "rlnotes-test-cache-") -> Path:
    """Point RLNOTES_CACHE_DIR at a new, empty folder for this test run, deleted when the process ends -> the folder.

    Tests and CI never read a checkpoint they did not write, so that a stale one cannot hide a change
    (tests/conftest.py and notebooks/conftest.py call this on import; the notebooks' kernels inherit the
    variable). The processes of one run share its folder: a pytest-xdist worker, whose parent process (the
    run's controller) made it, or a second conftest of the same process, keep it instead of making another.
    """
    owner, chosen = os.environ.get("RLNOTES_CACHE_RUN_OWNER"), os.environ.get("RLNOTES_CACHE_DIR", "")
    if owner in (str(os.getpid()), str(os.getppid())) and chosen and Path(chosen).is_dir():
        return Path(chosen)
    folder = tempfile.mkdtemp(prefix=prefix)
    os.environ["RLNOTES_CACHE_DIR"], os.environ["RLNOTES_CACHE_RUN_OWNER"] = folder, str(os.getpid())
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder)
