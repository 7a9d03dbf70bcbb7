"""The benchmark's bookkeeping (rlnotes.bench): seed parsing, IQM and bootstrap intervals, summaries and
tables, on made-up runs whose statistics are known. No training: every test here takes well under a second
(the bootstrap ones use a few hundred resamples)."""

import argparse
import importlib.util

import numpy as np
import pytest

from rlnotes import bench

# ---- seeds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seeds", [
    ("1000-1009", list(range(1000, 1010))),
    ("1,2,5", [1, 2, 5]),
    ("7", [7]),
    ("0-2", [0, 1, 2]),
    (" 1-3, 7 ", [1, 2, 3, 7]),
    ("4-4", [4]),
])
def test_parse_seeds_reads_ranges_and_lists(text, seeds):
    assert bench.parse_seeds(text) == seeds


@pytest.mark.parametrize("text, says", [
    ("", "got nothing"),
    ("  ", "got nothing"),
    ("5-3", "runs backwards; write 3-5"),
    ("-3", "neither a seed"),
    ("a", "neither a seed"),
    ("1.5", "neither a seed"),
    ("3-", "neither a seed"),
    ("1-2-3", "neither a seed"),
    ("1,,2", "empty item"),
    ("1,", "empty item"),
    ("1,2,1", "more than once"),
    ("1-3,2", "more than once"),
])
def test_parse_seeds_rejects_bad_input_with_a_clear_value_error(text, says):
    with pytest.raises(ValueError, match=says):
        bench.parse_seeds(text)


def test_seeds_argument_turns_the_value_error_into_an_argparse_message():
    with pytest.raises(argparse.ArgumentTypeError, match="runs backwards"):
        bench.seeds_argument("9-1")


def test_default_seeds_are_ten_and_none_was_tuned_on():
    assert len(bench.DEFAULT_SEEDS) == 10
    for algo, tuned in bench.TUNING_SEEDS.items():
        assert not set(bench.DEFAULT_SEEDS) & set(tuned), algo
    assert set(range(1, 25)) <= set(bench.TUNING_SEEDS["ppo"])  # PPO's 24-seed sweep


# ---- IQM and bootstrap intervals (rliable) --------------------------------------------------------

# The statistics need the bench extra (rliable); `make test` installs test and hf only, so these skip there.
needs_rliable = pytest.mark.skipif(importlib.util.find_spec("rliable") is None, reason="needs the bench extra (rliable)")


@needs_rliable
def test_iqm_is_the_mean_of_the_middle_half():
    assert bench.iqm(range(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert bench.iqm([1, 2, 3, 4, 1000]) == pytest.approx(3.0)  # 5 values: int(5/4) = 1 dropped each end
    assert bench.iqm([2.0]) == 2.0
    with pytest.raises(ValueError):
        bench.iqm([])


@needs_rliable
def test_iqm_ignores_the_censoring_value_while_failures_fit_in_the_trimmed_quarter():
    solved = [4096, 6144, 6144, 8192, 8192, 10240, 12288, 14336]
    assert bench.iqm(solved + [100_000, 100_000]) == bench.iqm(solved + [10**9, 10**9])


@needs_rliable
def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_seeds():
    few = np.exp(np.linspace(8.0, 10.0, 10))  # 10 seeds spread like steps to solve (3k to 22k)
    many = np.repeat(few, 16)  # the same spread, 16 times the seeds: the interval ~ 4 times narrower
    point, low, high = bench.bootstrap_ci(few, reps=500)
    assert point == pytest.approx(bench.iqm(few)) and low <= point <= high
    point_many, low_many, high_many = bench.bootstrap_ci(many, reps=500)
    assert low_many <= point_many <= high_many
    assert (high_many - low_many) < 0.5 * (high - low)
    assert bench.bootstrap_ci(few, reps=500) == (point, low, high)  # seeded: the same data, the same interval


@needs_rliable
def test_bootstrap_interval_of_a_constant_sample_is_that_constant():
    assert bench.bootstrap_ci([3.0] * 6, reps=200) == (3.0, 3.0, 3.0)


@needs_rliable
def test_bootstrap_ratio_resamples_both_sides_and_leaves_numpys_global_stream_alone():
    ours, theirs = [1.0, 2.0, 3.0, 4.0], [4.0, 6.0, 8.0, 10.0]
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    point, low, high = bench.bootstrap_ci(ours, theirs, reps=400)
    assert np.random.random() == expected_next
    assert point == pytest.approx(2.5 / 7.0)  # IQM of 1..4 is 2.5 (mean of 2, 3), of theirs 7
    assert low < point < high
    # both sides vary: the interval is wider than resampling rlnotes alone would make it
    _, low_one, high_one = bench.bootstrap_ci(ours, [7.0] * 4, reps=400)
    assert high - low > high_one - low_one
    assert bench.bootstrap_ci([], theirs, reps=10) == (None, None, None)
    assert bench.bootstrap_ci(ours, [0.0, 0.0], reps=10) == (None, None, None)


def test_verdict_reads_the_time_ratio_interval():
    assert bench.verdict(0.3, 0.8) == "rlnotes faster"
    assert bench.verdict(1.2, 2.5) == "reference faster"
    assert bench.verdict(0.6, 1.4) == "no clear difference"
    assert bench.verdict(None, None) == "-"


# ---- summaries and tables ---------------------------------------------------------------------


def _run(side, seed, step, seconds, env_steps=10_000, train_seconds=10.0):
    return {"side": side, "algo": "ppo", "env": "CartPole-v1", "seed": seed, "solved_step": step,
            "solved_seconds": seconds, "env_steps": env_steps, "train_seconds": train_seconds, "final_eval_mean": 500.0}


def _runs():
    return [_run("rlnotes", 1, 4096, 3.0), _run("rlnotes", 2, 8192, 5.0),
            _run("rlnotes", 3, None, None, env_steps=100_000, train_seconds=60.0),
            _run("reference", 1, 20480, 10.0, train_seconds=20.0), _run("reference", 2, 30720, 14.0, train_seconds=20.0),
            _run("reference", 3, 40960, 30.0, train_seconds=20.0)]


@needs_rliable
def test_summarize_counts_failures_and_censors_them_at_the_budget():
    (row,) = bench.summarize(_runs(), reps=200)
    ours, ref = row["rlnotes"], row["reference"]
    assert ours["solved"] == 2 and ours["failures"] == 1 and ref["solved"] == 3
    assert ours["censored_steps"] == [4096, 8192, 100_000] and ours["censored_seconds"] == [3.0, 5.0, 60.0]
    assert ours["median_steps"] == 8192 and ours["median_seconds"] == 5.0  # the unsolved run at its budget
    assert ours["iqm_lower_bound"]  # 1 failure of 3: more than int(3 / 4) = 0 trimmed
    assert not ref["iqm_lower_bound"]
    assert ref["median_seconds"] == 14.0
    assert row["time_ratio"] == pytest.approx(5.0 / 14.0)
    assert row["time_ratio_iqm"] == pytest.approx(bench.iqm([3.0, 5.0, 60.0]) / bench.iqm([10.0, 14.0, 30.0]))
    low, high = row["time_ratio_ci"]
    assert low <= row["time_ratio_iqm"] <= high
    assert row["steps_ratio_iqm"] == pytest.approx(bench.iqm([4096, 8192, 100_000]) / bench.iqm([20480, 30720, 40960]))
    assert row["verdict"] == bench.verdict(low, high)
    assert row["throughput_ratio"] == pytest.approx((10_000 / 10.0) / (10_000 / 20.0))


@needs_rliable
def test_markdown_shows_solved_counts_medians_iqms_intervals_and_the_seeds():
    (row,) = bench.summarize(_runs(), reps=200)
    table = bench.markdown([row])
    steps_line = next(line for line in table.splitlines() if line.startswith("| ppo | CartPole-v1 | 2/3 | 8,192 |"))
    assert ">= " in steps_line  # the rlnotes IQM is a lower bound (a failure more than the trim)
    assert "| 3/3 | 30,720 |" in steps_line
    low, high = row["steps_ratio_ci"]
    assert f"{row['steps_ratio_iqm']:.2f} [{low:.2f}, {high:.2f}]" in steps_line
    time_line = next(line for line in table.splitlines() if line.startswith("| ppo | CartPole-v1 | 5.0 |"))
    assert "| 0.36 |" in time_line and row["verdict"] in time_line and "| 2.00 |" in time_line
    assert "* ppo CartPole-v1 rlnotes: 1: 4,096 / 3.0, 2: 8,192 / 5.0, 3: unsolved (100,000)" in table
    assert "* ppo CartPole-v1 reference: 1: 20,480 / 10.0" in table


def test_with_ci_formats_points_intervals_and_lower_bounds():
    assert bench._with_ci(10240.0, [7851.3, 28954.7]) == "10,240 [7,851, 28,955]"
    assert bench._with_ci(0.666, [0.247, 1.819], 2) == "0.67 [0.25, 1.82]"
    assert bench._with_ci(5.0, None, 1, lower_bound=True) == ">= 5.0"
    assert bench._with_ci(None, None) == "-"


@needs_rliable
def test_plot_steps_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = bench.summarize(_runs(), reps=100)
    path = bench.plot_steps(rows, tmp_path / "steps.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zoo_schedules_are_linear_in_the_remaining_progress():
    schedule = bench.ZOO[("ppo", "CartPole-v1")]["kwargs"]["learning_rate"]
    assert schedule(1.0) == pytest.approx(0.001) and schedule(0.25) == pytest.approx(0.00025) and schedule(0.0) == 0.0


@needs_rliable
def test_main_from_runs_writes_the_tables_the_json_and_the_plot_without_training(tmp_path):
    import json

    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join(json.dumps(run) for run in _runs()) + "\n")
    out = tmp_path / "out"
    assert bench.main(["--from-runs", str(runs), "--out", str(out), "--reps", "100"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["seeds"] == [1, 2, 3] and results["meta"]["bootstrap_reps"] == 100
    assert results["rows"][0]["rlnotes"]["failures"] == 1
    assert "| ppo | CartPole-v1 | 2/3 |" in (out / "results.md").read_text()
    assert (out / "steps_to_solve.png").stat().st_size > 0


def test_main_rejects_bad_seeds_and_unknown_algorithms(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "9-1"])
    assert "runs backwards" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--algos", "ppo,sac"])
    assert "no reference for sac" in capsys.readouterr().err
