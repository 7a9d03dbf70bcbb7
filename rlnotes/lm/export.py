"""Preference data as JSONL for the libraries people train real models with: TRL and LLaMA-Factory.

Introduced in ``06_dpo``. The tiny GPT's data is the same kind of thing a real alignment run uses:
a prompt, a preferred and a dispreferred answer (DPO, IPO, reward models) or one answer with a thumbs
up or down (KTO). Written as JSON Lines (one record a line), these files load with
``datasets.load_dataset("json", data_files=...)``, which is how both libraries read local files.

Formats (checked against the libraries' documentation):

* TRL, "standard" preference format (DPOTrainer, RewardTrainer): ``{"prompt", "chosen", "rejected"}``,
  where chosen and rejected are the answers only, without the prompt.
* TRL, unpaired preference format (KTOTrainer): ``{"prompt", "completion", "label"}``, label a bool.
* LLaMA-Factory, alpaca-style preference dataset (``stage: dpo`` / ``rm``):
  ``{"instruction", "input", "chosen", "rejected"}``, registered in ``data/dataset_info.json`` with
  ``"ranking": true`` and the column mapping of ``llamafactory_dataset_info`` (hiyouga/LLaMA-Factory,
  data/README.md, "Preference Dataset"). LLaMA-Factory reads ``.jsonl`` files as JSON.
* LLaMA-Factory, KTO dataset: ``{"instruction", "input", "output", "kto_tag"}``.

Answers are exported as text without the EOS token: the trainers append the real tokenizer's own
EOS. (An answer cut at the generation budget, without EOS, would gain one there; such answers are
always wrong here, and only ever rejected.)
"""

from __future__ import annotations

import json
from pathlib import Path

from .task import AdditionTask

__all__ = [
    "preference_records", "trl_preference", "trl_unpaired", "llamafactory_preference", "llamafactory_kto",
    "llamafactory_dataset_info", "write_jsonl", "read_jsonl",
]


def preference_records(task: AdditionTask, data) -> list[dict]:
    """Plain-text pairs {"prompt", "chosen", "rejected"} from ``dpo.PreferenceData``."""
    tok = task.tokenizer
    prompts = task.prompt_texts(data.pairs)
    return [
        {"prompt": p, "chosen": tok.decode(c), "rejected": tok.decode(r)}
        for p, c, r in zip(prompts, data.chosen, data.rejected)
    ]


def trl_preference(records: list[dict]) -> list[dict]:
    """TRL's standard preference format: {"prompt", "chosen", "rejected"} (answers without the prompt)."""
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records]


def trl_unpaired(task: AdditionTask, data) -> list[dict]:
    """TRL's unpaired preference format for KTO: {"prompt", "completion", "label"} from ``dpo.UnpairedData``."""
    tok = task.tokenizer
    prompts = task.prompt_texts(data.pairs)
    return [
        {"prompt": p, "completion": tok.decode(c), "label": bool(d)}
        for p, c, d in zip(prompts, data.completions, data.desirable)
    ]


def llamafactory_preference(records: list[dict], instruction: str = "") -> list[dict]:
    """LLaMA-Factory's alpaca preference format: {"instruction", "input", "chosen", "rejected"}.

    LLaMA-Factory builds the user turn as ``instruction + "\\n" + input`` (just ``instruction`` when
    input is empty). By default the prompt is the instruction and input is empty; pass an
    `instruction` (e.g. "Add the two numbers.") to put it first and the prompt in ``input``.
    """
    out = []
    for r in records:
        if instruction:
            out.append({"instruction": instruction, "input": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
        else:
            out.append({"instruction": r["prompt"], "input": "", "chosen": r["chosen"], "rejected": r["rejected"]})
    return out


def llamafactory_kto(unpaired: list[dict]) -> list[dict]:
    """LLaMA-Factory's KTO format {"instruction", "input", "output", "kto_tag"} from ``trl_unpaired`` records."""
    return [{"instruction": r["prompt"], "input": "", "output": r["completion"], "kto_tag": r["label"]} for r in unpaired]


def llamafactory_dataset_info(name: str, file_name: str, kind: str = "preference") -> dict:
    """The entry to add to LLaMA-Factory's ``data/dataset_info.json`` for a file written here.

    kind: "preference" (``llamafactory_preference``) or "kto" (``llamafactory_kto``).
    """
    if kind == "preference":
        columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
        return {name: {"file_name": file_name, "ranking": True, "columns": columns}}
    if kind == "kto":
        columns = {"prompt": "instruction", "query": "input", "response": "output", "kto_tag": "kto_tag"}
        return {name: {"file_name": file_name, "columns": columns}}
    raise ValueError(f"llamafactory_dataset_info: kind must be 'preference' or 'kto', got {kind!r}")


def write_jsonl(records: list[dict], path) -> Path:
    """One JSON object a line, UTF-8; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path) -> list[dict]:
    """The records of a JSONL file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
