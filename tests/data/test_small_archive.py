"""Issue 33's acceptance on a small multi-site archive (16 subjects, two per manufacturer x field
strength, two series each): every split holds every manufacturer and field strength, the run says
that coverage overrode the fractions and prints the split table; with one PatientID for everyone
the run warns (naming PatientID, with the counts) and keeps one subject per study."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pytest
from small_archive import FIELDS, MANUFACTURERS, build_small_archive

from geco_tf.data import privacy as P
from geco_tf.data.preprocess import preprocess
from geco_tf.progress import Progress

pytestmark = pytest.mark.slow  # two archives of 352 files and two preprocess runs: about 30 s


def _run(tmp, archive, key=None, **kwargs):
    stream, log = io.StringIO(), []
    key = key or tmp / "site.key"
    summary = preprocess(tmp / "out", dicom_dir=archive, size=32, workers=1, key_file=key,
                         progress=Progress(quiet=False, steps=3, stream=stream), log=log.append, **kwargs)
    with open(tmp / "out" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    info = json.loads((tmp / "out" / "dataset.json").read_text())
    return summary, rows, info, stream.getvalue(), log, bytes.fromhex(key.read_text().strip())


@pytest.fixture(scope="module")
def distinct(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distinct")
    series = build_small_archive(tmp / "in")
    return series, _run(tmp, tmp / "in"), tmp / "in"


def test_every_split_holds_every_manufacturer_and_field_strength(distinct):
    series, (summary, rows, info, progress_text, log, key), _ = distinct
    by_split = defaultdict(lambda: defaultdict(set))
    for row in rows:
        for target in ("manufacturer", "field_strength", "subject"):
            by_split[row["split"]][target].add(row[target])
    for split in ("train", "val", "test"):
        assert by_split[split]["manufacturer"] == {name for _, name in MANUFACTURERS}, split
        assert by_split[split]["field_strength"] == {name for _, name in FIELDS}, split
    assert [len(by_split[s]["subject"]) for s in ("train", "val", "test")] == [8, 4, 4]
    assert len({row["subject"] for row in rows}) == 16
    # coverage needed more val/test subjects than 20%/10% of 16: said in the log and dataset.json
    assert any("coverage overrode the 10% fraction: test has 4 subject(s)" in m for m in log)
    assert info["made_by"]["split"]["coverage_overrode_fractions"]["test"] == {"subjects": 4, "fraction_asked": 2}
    assert info["made_by"]["split"]["missing_classes"] == []
    assert info["made_by"]["subjects"] == {"key": "patient", "fell_back_to_study_series": 0}
    assert not any("PatientID" in m for m in log)
    # the table of subjects/slices per split and class ends the run
    table = progress_text[progress_text.index("subjects/slices per split and class"):]
    line = next(x for x in table.splitlines() if x.startswith("manufacturer Philips"))
    counts = [cell.split("/") for cell in line.split()[2:]]
    assert [int(c[0]) for c in counts] == [2, 1, 1]
    assert sum(int(c[1]) for c in counts) == sum(1 for r in rows if r["manufacturer"] == "Philips")
    # every series is in, labelled right
    labelled = {(r["source_volume"], r["manufacturer"], r["field_strength"]) for r in rows}
    assert labelled == {(P.pseudonym(key, uid, "ser"), s["manufacturer"], s["field_strength"])
                        for uid, s in series.items()}


def test_the_split_does_not_depend_on_the_pseudonym_key(distinct, tmp_path):
    series, (_, rows, _, _, _, key), archive = distinct
    _, rows_other, _, _, _, other_key = _run(tmp_path, archive)  # a new key is made beside the output
    assert other_key != key
    split = {r["source_volume"]: r["split"] for r in rows}
    split_other = {r["source_volume"]: r["split"] for r in rows_other}
    assert {uid: split[P.pseudonym(key, uid, "ser")] for uid in series} == {
        uid: split_other[P.pseudonym(other_key, uid, "ser")] for uid in series
    }


def test_one_patient_id_for_all_warns_and_keeps_one_subject_per_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anon")
    series = build_small_archive(tmp / "in", patient_id="ANONYMOUS")
    summary, rows, info, _, log, key = _run(tmp, tmp / "in")
    warning = next(m for m in log if "PatientID" in m)
    assert warning.startswith("warning: PatientID: 1 value(s) each cover several studies (32 series in 16 studies")
    assert "ANONYMOUS" not in " ".join(log)
    assert info["made_by"]["subjects"] == {"key": "patient", "fell_back_to_study_series": 32}
    # one subject per study: the manifest's subjects group the series exactly as the studies do
    subject_of = {r["source_volume"]: r["subject"] for r in rows}
    by_study = defaultdict(set)
    for uid, s in series.items():
        by_study[s["study"]].add(subject_of[P.pseudonym(key, uid, "ser")])
    assert all(len(subjects) == 1 for subjects in by_study.values())
    assert len({next(iter(s)) for s in by_study.values()}) == 16
    for split in ("train", "val", "test"):
        assert {r["manufacturer"] for r in rows if r["split"] == split} == {name for _, name in MANUFACTURERS}
    # --subject-key folder (one folder per person) needs no fall-back and gives the same subjects
    (tmp / "f").mkdir()
    summary, rows_f, info_f, _, log_f, _ = _run(tmp / "f", tmp / "in", key=tmp / "site.key", subject_key="folder")
    assert not any("PatientID" in m for m in log_f)
    assert info_f["made_by"]["subjects"]["key"] == "folder"
    groups = {frozenset(r["source_volume"] for r in rows if r["subject"] == s) for s in {r["subject"] for r in rows}}
    groups_f = {frozenset(r["source_volume"] for r in rows_f if r["subject"] == s) for s in {r["subject"] for r in rows_f}}
    assert groups == groups_f
