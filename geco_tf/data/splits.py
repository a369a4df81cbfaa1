"""Subject-level train/val/test assignment that covers every scanner class in every split.

Why: a classifier of the scanner is judged per split, so a split without a manufacturer or field
strength cannot be evaluated (``geco-tf baseline`` refuses it). Cutting each stratum
(manufacturer x field strength) by 70/20/10 on its own gives a stratum of two subjects none for
test; on a small multi-site archive (a pilot or travelling-subject study, two subjects per
scanner) the test split then holds one manufacturer. So the rule here is *coverage before
fractions*:

1. **Coverage.** Every class of every target (manufacturer, field strength) that at least
   :data:`MIN_SUBJECTS_FOR_COVERAGE` subjects have is put in test, then in val, by taking
   subjects in rotation (the one that covers the most missing classes first, ties broken by the
   seeded order), never taking the last subjects of a class that a later split (val, then train)
   still needs.
2. **Fractions.** Test and val are then filled up to 10% and 20% of the subjects (rounded),
   taking from the stratum that has given the least so far; train gets the rest. When coverage
   alone needs more subjects than the fractions allow, coverage wins and :class:`SplitPlan`
   says so.

The assignment is a pure function of the subjects' labels, an ``order`` value per subject that
depends on the inputs only (preprocess uses a hash of the subject's pixels) and ``seed``: it does
not depend on the pseudonym key, so the same archive with the same seed splits the same way under
any key.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.2, 0.1)
COVERAGE_TARGETS = ("manufacturer", "field_strength")
#: A class needs this many subjects (one per split) before every split must hold it.
MIN_SUBJECTS_FOR_COVERAGE = 3


@dataclass
class SplitPlan:
    """The assignment subject -> split, and what the rule had to say about it."""

    assignment: dict[str, str]
    #: (split, target, class) for every class of >= 3 subjects that a split still lacks (should be empty).
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    #: split -> (subjects given, subjects the fractions asked) where coverage needed more.
    overridden: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (split, target, class, subjects) for classes of fewer than 3 subjects that a split lacks.
    too_few: list[tuple[str, str, str, int]] = field(default_factory=list)

    def messages(self) -> list[str]:
        """One line per override and per split that lacks a class (warnings for the run's log)."""
        out = [
            f"split: coverage overrode the {int(round(dict(zip(SPLITS, SPLIT_FRACTIONS))[s] * 100))}% "
            f"fraction: {s} has {given} subject(s) where the fraction asks {asked}, so that it holds every "
            "manufacturer and field strength"
            for s, (given, asked) in self.overridden.items()
        ]
        by_split: dict[str, list[str]] = defaultdict(list)
        for split, target, cls in self.missing:
            by_split[split].append(f"{target} {cls}")
        out.extend(
            f"warning: split {split!r} lacks {', '.join(names)} (the subjects could not cover it)"
            for split, names in by_split.items()
        )
        few: dict[str, list[str]] = defaultdict(list)
        for split, target, cls, n in self.too_few:
            few[split].append(f"{target} {cls} ({n} subject{'s' if n != 1 else ''})")
        out.extend(
            f"warning: split {split!r} lacks {', '.join(names)}: a class needs {MIN_SUBJECTS_FOR_COVERAGE} "
            "subjects to be in every split"
            for split, names in few.items()
        )
        return out


def _classes(labels: Mapping[str, object], target: str) -> set[str]:
    value = labels.get(target)
    if value is None or value == "":
        return set()
    if isinstance(value, (set, frozenset, list, tuple)):
        return {str(v) for v in value if v not in (None, "")}
    return {str(value)}


def assign_splits(
    subjects: Mapping[str, Mapping[str, object]],
    seed: int = 0,
    order: Mapping[str, str] | None = None,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    targets: Sequence[str] = COVERAGE_TARGETS,
) -> SplitPlan:
    """Assign each subject to train/val/test: coverage of every class first, then the fractions.

    Args:
        subjects: subject id -> labels, ``{"manufacturer": ..., "field_strength": ...}``; a value
            may be a set when a subject was scanned on several scanners (a travelling subject).
        seed: the seed of the shuffle (``--seed``).
        order: subject id -> a sort key that does not depend on the pseudonym key (e.g. a hash
            of the subject's pixels); without it the subject ids themselves are sorted.
        fractions: train, val, test fractions of the subjects.
        targets: the labels whose classes every split must hold.
    """
    order = order or {}
    ids = sorted(subjects, key=lambda s: (str(order.get(s, "")), s))
    random.Random(seed).shuffle(ids)
    rank = {s: i for i, s in enumerate(ids)}
    classes = {s: {(t, c) for t in targets for c in _classes(subjects[s], t)} for s in ids}
    size = Counter(tc for s in ids for tc in classes[s])
    eligible = {tc for tc, n in size.items() if n >= MIN_SUBJECTS_FOR_COVERAGE}
    stratum = {s: "|".join(sorted(c for _, c in classes[s])) or "unlabelled" for s in ids}

    assignment: dict[str, str] = {}
    held: dict[str, set] = {split: set() for split in SPLITS}
    left = Counter(size)  # unassigned subjects per class

    def take(subject: str, split: str) -> None:
        assignment[subject] = split
        held[split] |= classes[subject]
        left.subtract(classes[subject])

    def spare(subject: str, later: Sequence[str]) -> bool:
        """Taking ``subject`` still leaves a subject of each of its classes for each later split."""
        for tc in classes[subject]:
            need = sum(1 for split in later if tc not in held[split] and (tc in eligible or split == "train"))
            if left[tc] - 1 < need:
                return False
        return True

    # 1. coverage: test, then val (train is what is left, kept feasible by spare())
    coverage_order = ("test", "val")
    for i, split in enumerate(coverage_order):
        later = [*coverage_order[i + 1 :], "train"]
        while True:
            missing = eligible - held[split]
            if not missing:
                break
            candidates = [
                s for s in ids if s not in assignment and classes[s] & missing and spare(s, later)
            ]
            if not candidates:
                break
            best = max(candidates, key=lambda s: (len(classes[s] & missing), -rank[s]))
            take(best, split)
    covered = {split: sum(1 for v in assignment.values() if v == split) for split in ("val", "test")}

    # 2. fractions: fill test and val from the stratum that has given least so far
    n = len(ids)
    asked = {"val": int(round(n * fractions[1])), "test": int(round(n * fractions[2]))}
    stratum_size = Counter(stratum.values())
    for split in ("test", "val"):
        later = ["val", "train"] if split == "test" else ["train"]
        while sum(1 for v in assignment.values() if v == split) < asked[split]:
            given = Counter(stratum[s] for s in assignment)
            candidates = [s for s in ids if s not in assignment and spare(s, later)]
            # a stratum with one subject stays in train; with two, val may have one, test none
            candidates = [
                s for s in candidates
                if stratum_size[stratum[s]] >= MIN_SUBJECTS_FOR_COVERAGE
                or (split == "val" and stratum_size[stratum[s]] == 2 and not given[stratum[s]])
            ]
            if not candidates:
                break
            best = min(candidates, key=lambda s: (given[stratum[s]] / stratum_size[stratum[s]], rank[s]))
            take(best, split)
    for s in ids:
        if s not in assignment:
            take(s, "train")

    plan = SplitPlan(assignment=assignment)
    plan.missing = sorted(
        (split, t, c) for split in SPLITS for (t, c) in eligible if (t, c) not in held[split]
    )
    plan.too_few = sorted(
        (split, t, c, size[(t, c)]) for split in SPLITS for (t, c) in size
        if (t, c) not in eligible and (t, c) not in held[split]
    )
    plan.overridden = {
        split: (covered[split], asked[split]) for split in ("val", "test") if covered[split] > asked[split]
    }
    return plan


def split_table(rows: Iterable[Mapping[str, object]], targets: Sequence[str] = COVERAGE_TARGETS) -> str:
    """A text table of subjects and slices per split and class, from manifest-like rows
    (``subject``, ``split`` and one column per target)."""
    subjects: dict[tuple[str, str, str], set] = defaultdict(set)
    slices: Counter = Counter()
    all_subjects: dict[str, set] = defaultdict(set)
    total: Counter = Counter()
    for row in rows:
        split = str(row["split"])
        all_subjects[split].add(row["subject"])
        total[split] += 1
        for t in targets:
            cls = str(row.get(t) or "unknown")
            subjects[(t, cls, split)].add(row["subject"])
            slices[(t, cls, split)] += 1
    header = f"{'class':<36}" + "".join(f"{s:>18}" for s in SPLITS)
    lines = [header, f"{'':<36}" + "".join(f"{'subjects/slices':>18}" for _ in SPLITS)]
    for t in targets:
        for cls in sorted({c for (tt, c, _) in subjects if tt == t}):
            cells = "".join(f"{len(subjects[(t, cls, s)]):>9}/{slices[(t, cls, s)]:<8}" for s in SPLITS)
            lines.append(f"{(t + ' ' + cls)[:36]:<36}{cells}")
    lines.append(f"{'all':<36}" + "".join(f"{len(all_subjects[s]):>9}/{total[s]:<8}" for s in SPLITS))
    return "\n".join(lines)
