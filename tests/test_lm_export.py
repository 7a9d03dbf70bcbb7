"""rlnotes.lm.export: JSONL for TRL and LLaMA-Factory, read back the way each library maps its columns."""

import json

import pytest
import torch

from rlnotes.lm import dpo, export
from rlnotes.lm.task import AdditionTask

TASK = AdditionTask()


def _samples():
    """Three prompts, two answers each, built by hand: a right one and a wrong one (or two of a kind)."""
    pairs = torch.tensor([[7, 58], [0, 3], [99, 99]])
    answers = torch.tensor([[65, 64], [3, 3], [208, 198]])
    completions = TASK.completions(answers.reshape(-1)).view(3, 2, -1)
    rewards = (answers == pairs.sum(-1, keepdim=True)).float()
    return dpo.Samples(pairs, completions, rewards)


def test_pairs_and_records_by_hand():
    data = dpo.make_pairs(TASK, _samples())
    records = export.preference_records(TASK, data)
    # 00+03 has no pair: both answers are right, nothing to prefer
    assert records == [
        {"prompt": "07+58=", "chosen": "65", "rejected": "64"},
        {"prompt": "99+99=", "chosen": "198", "rejected": "208"},
    ]


def test_trl_files_read_back(tmp_path):
    samples = _samples()
    records = export.preference_records(TASK, dpo.make_pairs(TASK, samples))
    path = export.write_jsonl(export.trl_preference(records), tmp_path / "trl" / "pairs.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(set(json.loads(line)) == {"prompt", "chosen", "rejected"} for line in lines)
    assert export.read_jsonl(path) == records
    unpaired = export.trl_unpaired(TASK, dpo.make_unpaired(TASK, samples))
    back = export.read_jsonl(export.write_jsonl(unpaired, tmp_path / "kto.jsonl"))
    assert back == unpaired and len(back) == 6
    assert [(r["prompt"], r["completion"], r["label"]) for r in back[:2]] == [("07+58=", "65", True), ("07+58=", "64", False)]
    assert all(isinstance(r["label"], bool) for r in back)


def _llamafactory_read(path, info):
    """LLaMA-Factory's alpaca preference converter, reduced to its column mapping: the user turn is
    prompt-column + "\\n" + query-column (just the prompt column when the query is empty)."""
    (entry,) = info.values()
    assert entry["ranking"] is True and entry["file_name"] == path.name
    cols = entry["columns"]
    out = []
    for row in export.read_jsonl(path):
        user = row[cols["prompt"]] + ("\n" + row[cols["query"]] if row[cols["query"]] else "")
        out.append({"prompt": user, "chosen": row[cols["chosen"]], "rejected": row[cols["rejected"]]})
    return out


def test_llamafactory_preference_file_reads_back_with_its_dataset_info(tmp_path):
    records = export.preference_records(TASK, dpo.make_pairs(TASK, _samples()))
    path = export.write_jsonl(export.llamafactory_preference(records), tmp_path / "addition_pairs.jsonl")
    info = export.llamafactory_dataset_info("addition_pairs", path.name)
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert _llamafactory_read(path, info) == records
    first = export.read_jsonl(path)[0]
    assert first == {"instruction": "07+58=", "input": "", "chosen": "65", "rejected": "64"}
    # with an instruction, the prompt moves to `input` and the user turn is "instruction\nprompt"
    with_instruction = export.llamafactory_preference(records, instruction="Add the two numbers.")
    path2 = export.write_jsonl(with_instruction, tmp_path / "b.jsonl")
    back = _llamafactory_read(path2, export.llamafactory_dataset_info("b", "b.jsonl"))
    assert back[0]["prompt"] == "Add the two numbers.\n07+58="


def test_llamafactory_kto_file_and_bad_kind(tmp_path):
    unpaired = export.trl_unpaired(TASK, dpo.make_unpaired(TASK, _samples()))
    path = export.write_jsonl(export.llamafactory_kto(unpaired), tmp_path / "kto.jsonl")
    info = export.llamafactory_dataset_info("kto", "kto.jsonl", kind="kto")
    cols = info["kto"]["columns"]
    back = [(r[cols["prompt"]], r[cols["response"]], r[cols["kto_tag"]]) for r in export.read_jsonl(path)]
    assert back == [(r["prompt"], r["completion"], r["label"]) for r in unpaired]
    with pytest.raises(ValueError, match="kind"):
        export.llamafactory_dataset_info("x", "x.jsonl", kind="sft")
