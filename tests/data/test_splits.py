"""The subject split: every manufacturer and field strength in every split first, then 70/20/10;
a pure function of the labels, an input-derived order and the seed."""

from __future__ import annotations

import random
from collections import Counter

from geco_tf.data.splits import SPLITS, assign_splits, split_table

MANUFACTURERS = ("GE", "Siemens", "Philips", "Toshiba")
FIELDS = ("1.5T", "3T")


def _small_archive(per_stratum: int = 2) -> dict[str, dict]:
    return {
        f"{m}-{f}-{k}": {"manufacturer": m, "field_strength": f}
        for m in MANUFACTURERS for f in FIELDS for k in range(per_stratum)
    }


def _classes(subjects: dict, plan, split: str, target: str) -> set:
    return {subjects[s][target] for s, v in plan.assignment.items() if v == split}


def test_two_subjects_per_scanner_every_split_holds_every_class():
    subjects = _small_archive(2)  # 16 subjects: per-stratum 70/20/10 gave test none of them
    for seed in range(10):
        plan = assign_splits(subjects, seed=seed)
        assert set(plan.assignment) == set(subjects)
        for split in SPLITS:
            assert _classes(subjects, plan, split, "manufacturer") == set(MANUFACTURERS), (seed, split)
            assert _classes(subjects, plan, split, "field_strength") == set(FIELDS), (seed, split)
        assert plan.missing == []
        counts = Counter(plan.assignment.values())
        assert counts["test"] == 4 and counts["val"] == 4 and counts["train"] == 8
        # coverage needed more than round(16 * 0.1) = 2 test and round(16 * 0.2) = 3 val subjects: said
        assert plan.overridden == {"test": (4, 2), "val": (4, 3)}
        text = "\n".join(plan.messages())
        assert "coverage overrode" in text and "test has 4 subject(s)" in text and "asks 2" in text


def test_large_archive_keeps_the_fractions_and_the_strata():
    rng = random.Random(3)
    subjects = {f"s{i}": {"manufacturer": rng.choice(MANUFACTURERS), "field_strength": rng.choice(FIELDS)}
                for i in range(300)}
    plan = assign_splits(subjects, seed=0)
    counts = Counter(plan.assignment.values())
    assert counts == {"train": 210, "val": 60, "test": 30}
    assert not plan.overridden and not plan.missing
    for split in ("val", "test"):  # each stratum gives about its share
        strata = Counter(
            (subjects[s]["manufacturer"], subjects[s]["field_strength"]) for s, v in plan.assignment.items() if v == split
        )
        total = Counter((v["manufacturer"], v["field_strength"]) for v in subjects.values())
        share = 0.2 if split == "val" else 0.1
        for stratum, n in total.items():
            assert abs(strata[stratum] - share * n) <= 1.5, (split, stratum, strata[stratum], n)


def test_deterministic_seeded_and_independent_of_subject_names():
    subjects = _small_archive(3)
    order = {s: f"{hash(s) & 0xFFFF:05d}{s}" for s in subjects}  # an input-derived key
    a = assign_splits(subjects, seed=1, order=order)
    assert a.assignment == assign_splits(subjects, seed=1, order=order).assignment
    assert a.assignment != assign_splits(subjects, seed=2, order=order).assignment
    # renaming every subject (another pseudonym key) with the same order gives the same split
    renamed = {f"x{i}": subjects[s] for i, s in enumerate(sorted(subjects, reverse=True))}
    back = dict(zip(renamed, sorted(subjects, reverse=True)))
    b = assign_splits(renamed, seed=1, order={r: order[back[r]] for r in renamed})
    assert {back[r]: v for r, v in b.assignment.items()} == a.assignment


def test_too_few_subjects_is_named_not_hidden():
    subjects = _small_archive(2)
    subjects["lone"] = {"manufacturer": "Hitachi", "field_strength": "3T"}  # one subject: train only
    subjects["pair-a"] = {"manufacturer": "Canon", "field_strength": "1.5T"}
    subjects["pair-b"] = {"manufacturer": "Canon", "field_strength": "1.5T"}
    plan = assign_splits(subjects, seed=0)
    assert plan.assignment["lone"] == "train"
    assert {plan.assignment["pair-a"], plan.assignment["pair-b"]} <= {"train", "val"}
    assert "train" in {plan.assignment["pair-a"], plan.assignment["pair-b"]}
    assert plan.missing == []  # classes of < 3 subjects are not required everywhere, but named
    text = "\n".join(plan.messages())
    assert "warning: split 'test' lacks manufacturer Canon (2 subjects), manufacturer Hitachi (1 subject)" in text
    assert "a class needs 3 subjects to be in every split" in text


def test_travelling_subject_and_three_subject_classes():
    # a subject scanned on two scanners counts for both manufacturers
    subjects = {
        "a": {"manufacturer": "GE", "field_strength": "3T"},
        "b": {"manufacturer": "GE", "field_strength": "3T"},
        "c": {"manufacturer": {"GE", "Siemens"}, "field_strength": "3T"},
        "d": {"manufacturer": "Siemens", "field_strength": "3T"},
        "e": {"manufacturer": "Siemens", "field_strength": "3T"},
    }
    plan = assign_splits(subjects, seed=0)
    for split in SPLITS:
        held: set = set()
        for s, v in plan.assignment.items():
            if v == split:
                m = subjects[s]["manufacturer"]
                held |= {m} if isinstance(m, str) else set(m)
        assert held == {"GE", "Siemens"}, split
    # a class of exactly three subjects: one in each split
    three = {f"g{i}": {"manufacturer": "GE", "field_strength": "3T"} for i in range(3)}
    three |= {f"s{i}": {"manufacturer": "Siemens", "field_strength": "1.5T"} for i in range(3)}
    plan = assign_splits(three, seed=4)
    assert not plan.missing
    assert sorted(plan.assignment[f"g{i}"] for i in range(3)) == ["test", "train", "val"]


def test_missing_classes_are_named_in_the_messages():
    from geco_tf.data.splits import SplitPlan

    plan = SplitPlan(assignment={}, missing=[("test", "manufacturer", "GE"), ("test", "field_strength", "3T")])
    assert plan.messages() == ["warning: split 'test' lacks manufacturer GE, field_strength 3T (the subjects could not cover it)"]


def test_split_table_counts_subjects_and_slices():
    rows = [
        {"subject": "a", "split": "train", "manufacturer": "GE", "field_strength": "3T"},
        {"subject": "a", "split": "train", "manufacturer": "GE", "field_strength": "3T"},
        {"subject": "b", "split": "test", "manufacturer": "Siemens", "field_strength": None},
    ]
    table = split_table(rows).splitlines()
    ge = next(line for line in table if line.startswith("manufacturer GE"))
    assert ge.split()[2:] == ["1/2", "0/0", "0/0"]
    unknown = next(line for line in table if line.startswith("field_strength unknown"))
    assert unknown.split()[2:] == ["0/0", "0/0", "1/1"]
    assert table[-1].split() == ["all", "1/2", "0/0", "1/1"]
