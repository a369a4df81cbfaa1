"""--subject-key: PatientID with a fall-back to the study where the PatientID cannot tell people
apart (shared across studies, or empty), StudyInstanceUID, or the first folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from geco_tf.data.dicom import SeriesFiles
from geco_tf.data.preprocess import subject_values
from geco_tf.errors import UserError

ROOT = Path("/archive")


def _series(uid: str, patient_id: str, study: str, folder: str) -> SeriesFiles:
    return SeriesFiles(uid=uid, patient=patient_id or "name|date", modality="MR", sop_class="", image_type="",
                       files=[f"/archive/{folder}/{uid}/1.dcm", f"/archive/{folder}/{uid}/2.dcm"],
                       patient_id=patient_id, study=study)


def test_patient_id_kept_where_it_tells_people_apart():
    series = {u: _series(u, pid, study, folder) for u, pid, study, folder in [
        ("s1", "P1", "st1", "a"), ("s2", "P1", "st1", "a"), ("s3", "P2", "st2", "b")]}
    values, fallback, warnings = subject_values(series, "patient", ROOT)
    assert values == {"s1": "P1", "s2": "P1", "s3": "P2"} and fallback == 0 and warnings == []


def test_one_patient_id_over_several_studies_falls_back_to_the_study_with_a_count():
    series = {f"s{i}": _series(f"s{i}", "ANON", f"st{i // 2}", f"p{i // 2}") for i in range(6)}
    series["s9"] = _series("s9", "", "st9", "q")
    values, fallback, warnings = subject_values(series, "patient", ROOT)
    assert values["s0"] == values["s1"] == "study:st0" and values["s2"] == "study:st1"
    assert values["s9"] == "study:st9" and fallback == 7
    assert warnings[0].startswith("warning: PatientID: 1 value(s) each cover several studies (6 series in 3 studies)")
    assert "ANON" not in " ".join(warnings)
    assert warnings[1] == ("warning: PatientID: empty in 1 series; these series are told apart by study "
                           "(StudyInstanceUID) instead")


def test_one_patient_id_and_one_study_for_every_series_is_said():
    series = {f"s{i}": _series(f"s{i}", "P1", "st", "a") for i in range(3)}
    values, fallback, warnings = subject_values(series, "patient", ROOT)
    assert set(values.values()) == {"P1"} and fallback == 0
    assert warnings == ["warning: PatientID: one value for all 3 series (one study): the whole archive is one "
                        "subject, so it can only go to one split"]


def test_study_and_folder_keys():
    series = {u: _series(u, "ANON", study, folder) for u, study, folder in [
        ("s1", "st1", "alice"), ("s2", "st2", "alice"), ("s3", "st3", "bob")]}
    assert subject_values(series, "study", ROOT)[0] == {"s1": "study:st1", "s2": "study:st2", "s3": "study:st3"}
    values, fallback, warnings = subject_values(series, "folder", ROOT)
    assert values == {"s1": "folder:alice", "s2": "folder:alice", "s3": "folder:bob"} and not warnings
    with pytest.raises(UserError, match="--subject-key name: choose one of patient, study, folder"):
        subject_values(series, "name", ROOT)
