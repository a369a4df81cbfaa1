"""Test helper: a small multi-site DICOM archive (16 subjects, two subjects per manufacturer x
field strength, two series each in one study, four orientations), written with pydicom.

Small on purpose (6-16 slices of 20-32 pixels) so that a whole preprocess run takes seconds.
"""

from __future__ import annotations

from pathlib import Path

from dicom_series import write_series
from pydicom.uid import generate_uid

#: (header spelling, canonical name) of the four manufacturers the dataset knows.
MANUFACTURERS = (
    ("GE MEDICAL SYSTEMS", "GE Medical Systems"),
    ("SIEMENS", "Siemens"),
    ("Philips Medical Systems", "Philips"),
    ("Imaging Biometrics", "Imaging Biometrics"),
)
FIELDS = ((1.5, "1.5T"), (3.0, "3T"))
ORIENTATIONS = ("axial", "sagittal", "coronal", "oblique")


def build_small_archive(root: str | Path, patient_id: str | None = None) -> dict:
    """Write the archive under ``root/subNN/``; return per series UID its subject index, study UID
    and labels. ``patient_id``: one PatientID for everyone (as some de-identified exports write),
    else ``MRN-NN`` per subject."""
    root = Path(root)
    series: dict[str, dict] = {}
    k = 0
    for header_name, manufacturer in MANUFACTURERS:
        for tesla, field in FIELDS:
            for _ in range(2):
                study = generate_uid()
                ids = {"patient_id": patient_id or f"MRN-{k:02d}", "patient_name": f"Subject^{k:02d}",
                       "study_uid": study, "manufacturer": header_name, "field_strength": tesla}
                t1 = write_series(root / f"sub{k:02d}" / "t1", orientation="axial", shape=(6, 32, 32),
                                  description="t1_mprage", seed=100 + 2 * k, **ids)
                orientation = ORIENTATIONS[k % 4]
                t2 = write_series(root / f"sub{k:02d}" / "t2", orientation=orientation, shape=(16, 20, 20),
                                  spacing=(1.0, 1.0, 1.2), description="t2_tse", seed=101 + 2 * k, **ids)
                for s in (t1, t2):
                    series[s["series_uid"]] = {"subject": k, "study": study, "manufacturer": manufacturer,
                                               "field_strength": field}
                k += 1
    return series
