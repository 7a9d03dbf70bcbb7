"""The benchmark's bookkeeping (rlnotes.bench.summarize), on made-up runs whose medians are known."""

import pytest

from rlnotes import bench


def _run(side, seed, step, seconds, env_steps=10_000, train_seconds=10.0):
    return {"side": side, "algo": "ppo", "env": "CartPole-v1", "seed": seed, "solved_step": step,
            "solved_seconds": seconds, "env_steps": env_steps, "train_seconds": train_seconds, "final_eval_mean": 500.0}


def test_summarize_takes_medians_over_solved_seeds_and_the_ratio_of_medians():
    runs = [_run("rlnotes", 1, 4096, 3.0), _run("rlnotes", 2, 8192, 5.0), _run("rlnotes", 3, None, None),
            _run("reference", 1, 20480, 10.0, train_seconds=20.0), _run("reference", 2, 30720, 14.0, train_seconds=20.0),
            _run("reference", 3, 40960, 30.0, train_seconds=20.0)]
    (row,) = bench.summarize(runs)
    assert row["rlnotes"]["solved"] == 2 and row["reference"]["solved"] == 3
    assert row["rlnotes"]["median_steps"] == 6144 and row["rlnotes"]["median_seconds"] == 4.0  # over the 2 solved
    assert row["reference"]["median_seconds"] == 14.0
    assert row["time_ratio"] == pytest.approx(4.0 / 14.0)
    assert row["throughput_ratio"] == pytest.approx((10_000 / 10.0) / (10_000 / 20.0))
    table = bench.markdown([row])
    assert "| ppo | CartPole-v1 | 2/3 |" in table and "0.29" in table


def test_zoo_schedules_are_linear_in_the_remaining_progress():
    schedule = bench.ZOO[("ppo", "CartPole-v1")]["kwargs"]["learning_rate"]
    assert schedule(1.0) == pytest.approx(0.001) and schedule(0.25) == pytest.approx(0.00025) and schedule(0.0) == 0.0
