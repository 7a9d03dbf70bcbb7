"""The course's seed helper: RLNOTES_SEED_OFFSET shifts every seed, bad values are refused."""

import pytest

from rlnotes.utils import course_seed, seed_offset


def test_course_seed_default_offset_is_identity(monkeypatch):
    monkeypatch.delenv("RLNOTES_SEED_OFFSET", raising=False)
    assert seed_offset() == 0
    assert [course_seed(k) for k in (0, 1, 7)] == [0, 1, 7]


def test_course_seed_shifts_by_offset_without_collisions(monkeypatch):
    monkeypatch.setenv("RLNOTES_SEED_OFFSET", "3")
    assert course_seed(0) == 3000 and course_seed(42) == 3042
    seeds = {course_seed(k) for k in range(1000)}
    monkeypatch.setenv("RLNOTES_SEED_OFFSET", "2")
    assert seeds.isdisjoint(course_seed(k) for k in range(1000))


@pytest.mark.parametrize("raw", ["-1", "two", "1.5"])
def test_bad_offset_is_refused(monkeypatch, raw):
    monkeypatch.setenv("RLNOTES_SEED_OFFSET", raw)
    with pytest.raises(ValueError, match="RLNOTES_SEED_OFFSET"):
        seed_offset()


@pytest.mark.parametrize("k", [-1, 1.0, True, "1"])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match="course_seed"):
        course_seed(k)
