"""Scanner and contrast labels from DICOM headers (or a labels CSV), normalised to fixed classes.

Headers spell one vendor many ways ("SIEMENS", "Siemens Healthineers", "SIEMENS AG"); a classifier
trained on raw strings would learn the spelling, not the scanner. So manufacturers map to the
canonical names of :data:`geco_tf.data.dataset.MANUFACTURERS`, other vendors are kept under a
cleaned name. Field strength is bucketed to 1.5T / 3T with a tolerance (Siemens writes 1.494 for
1.5T, old GE headers write Gauss), anything else is recorded but excluded from that target.
Contrast (modality, in the paper's Table 2 sense) comes from the series description and the
sequence tags; it is a label that is *not* the scanner, used to check that GECO keeps the image
content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from geco_tf.data.dataset import MODALITIES

#: Tolerance (tesla) around the nominal 1.5 T and 3 T.
FIELD_TOLERANCE = {"1.5T": (1.5, 0.15), "3T": (3.0, 0.3)}

_MANUFACTURER_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsiemens\b"), "Siemens"),
    (re.compile(r"^(ge|gems|general electric)\b|\bge (medical|healthcare)\b|^ge_"), "GE Medical Systems"),
    (re.compile(r"\bphilips\b"), "Philips"),
    (re.compile(r"\bimaging biometrics\b"), "Imaging Biometrics"),
)


def clean_text(value: Any) -> str:
    """Header text without padding, control characters, underscores or repeated spaces."""
    if value is None:
        return ""
    text = str(value).replace("\x00", " ").replace("_", " ")
    return re.sub(r"\s+", " ", text).strip(" .,;:-\t")


def normalise_manufacturer(value: Any) -> str | None:
    """Canonical manufacturer name, or ``None`` when the header gives none.

    The four vendors of the paper map to their canonical names whatever the spelling; any other
    vendor is kept, cleaned (an all-capitals name becomes capitalised words, short words such as
    "MEC" stay capitals), so e.g. "TOSHIBA_MEC" -> "Toshiba MEC".
    """
    text = clean_text(value)
    if not text:
        return None
    key = text.lower()
    for pattern, name in _MANUFACTURER_RULES:
        if pattern.search(key):
            return name
    if text.isupper():
        text = " ".join(w if len(w) <= 3 else w.capitalize() for w in text.split())
    return text


def parse_field_strength(value: Any) -> float | None:
    """Field strength in tesla from a header or CSV value; ``None`` when absent or unreadable.

    Accepts "3", "3.0", "1.494", "1.5T", "3 T"; values above 100 are taken as Gauss (old GE
    headers store 15000 for 1.5 T).
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    text = str(value).strip().upper().rstrip("T").strip()
    try:
        tesla = float(text)
    except ValueError:
        return None
    if tesla != tesla or tesla <= 0:  # NaN or non-positive
        return None
    if tesla > 100:
        tesla /= 10000.0
    return tesla


def field_strength_label(value: Any) -> str | None:
    """"1.5T" or "3T" when ``value`` is within tolerance of either, else ``None``."""
    tesla = parse_field_strength(value)
    if tesla is None:
        return None
    for label, (nominal, tolerance) in FIELD_TOLERANCE.items():
        if abs(tesla - nominal) <= tolerance:
            return label
    return None


# --- contrast ------------------------------------------------------------------------------

_OTHER_WORDS = (
    "dwi", "adc", "dti", "diff", "diffusion", "trace", "tensor", "ep2d", "epi", "bold", "fmri", "rest",
    "resting", "perf", "perfusion", "dsc", "dce", "asl", "pcasl", "swi", "swan", "susc", "phase", "pd",
    "proton", "tof", "mra", "angio", "mip", "spectro", "csi", "svs", "map", "t1map", "t2map", "fa",
    "cbf", "cbv", "mtt", "ktrans", "dyn", "dynamic", "loc", "localizer", "localiser", "scout", "survey",
)
_POST_WORDS = ("post", "gd", "gad", "gado", "contrast", "ce", "+c", "km", "postgd", "postcontrast", "enhanced")
_PRE_WORDS = ("pre", "precontrast", "pregd", "native", "nativ")
_T1_WORDS = ("t1", "t1w", "mprage", "spgr", "fspgr", "bravo", "vibe", "tfl", "tfe", "t1tfe", "ffe", "flash",
             "mp2rage", "space t1")
_T2_WORDS = ("t2", "t2w", "tse t2", "fse t2")
_FLAIR_WORDS = ("flair", "dark fluid", "darkfluid", "tirm")


def _tokens(text: str) -> set[str]:
    """Words of ``text`` plus their glued parts ("t1post" -> t1, post); "+C"/"C+" becomes "+c"."""
    text = text.lower()
    words = set(re.findall(r"[a-z0-9]+", text))
    for word in list(words):
        words.update(re.findall(r"t[12](?!\d)|[a-z]+|\d+", word))
    if re.search(r"\+\s*c(?![a-z])|(?<![a-z])c\s*\+", text):
        words.add("+c")
    return words


def _has(tokens: set[str], text: str, words: tuple[str, ...]) -> bool:
    return any((w in tokens) if " " not in w else (w in text) for w in words)


def classify_modality(
    description: str = "",
    protocol: str = "",
    sequence_name: str = "",
    contrast_agent: str = "",
    acquisition_contrast: str = "",
    image_type: str = "",
    repetition_time: float | None = None,
    echo_time: float | None = None,
    inversion_time: float | None = None,
) -> str:
    """One of :data:`MODALITIES` from the text and timing of a series, the way a reader would.

    The series description and protocol name decide first (they are what a radiographer typed);
    diffusion, perfusion, angiography, localisers, maps and the like are OTHER. Without a telling
    text, the enhanced-MR Acquisition Contrast, then TR/TE/TI decide. T1 is POST when the text
    says so (post, Gd, +C, contrast) or a contrast agent is recorded.
    """
    text = " ".join(clean_text(t).lower() for t in (description, protocol, sequence_name, image_type) if t)
    tokens = _tokens(text)
    agent = clean_text(contrast_agent).lower()
    post = _has(tokens, text, _POST_WORDS) or (bool(agent) and agent not in {"none", "no", "0"})
    if _has(tokens, text, _PRE_WORDS):
        post = False
    if _has(tokens, text, _FLAIR_WORDS):
        if "t1" in tokens:
            return "T1 POST" if post else "T1 PRE"
        return "T2 FLAIR" if "t2" in tokens else "FLAIR"
    if _has(tokens, text, _OTHER_WORDS):
        return "OTHER"
    if _has(tokens, text, _T1_WORDS):
        return "T1 POST" if post else "T1 PRE"
    if _has(tokens, text, _T2_WORDS):
        return "T2"
    contrast = clean_text(acquisition_contrast).upper()
    if contrast == "T1":
        return "T1 POST" if post else "T1 PRE"
    if contrast == "T2":
        return "T2"
    if contrast == "FLAIR":
        return "FLAIR"
    if contrast:
        return "OTHER"
    tr, te, ti = repetition_time, echo_time, inversion_time
    if ti is not None and ti >= 1500 and (tr or 0) >= 4000:
        return "FLAIR"
    if tr is not None and te is not None:
        if tr <= 1000 and te <= 30:
            return "T1 POST" if post else "T1 PRE"
        if tr >= 2000 and te >= 60:
            return "T2"
    return "OTHER"


def modality_from_header(header: Mapping[str, Any]) -> str:
    """:func:`classify_modality` on a pydicom dataset (or any mapping of DICOM keywords)."""

    def get(name: str) -> Any:
        try:
            return header.get(name)
        except Exception:  # a malformed element must not stop labelling
            return None

    def number(name: str) -> float | None:
        try:
            value = get(name)
            return None if value in (None, "") else float(value)
        except (TypeError, ValueError):
            return None

    image_type = get("ImageType") or ()
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return classify_modality(
        description=get("SeriesDescription") or "",
        protocol=get("ProtocolName") or "",
        sequence_name=" ".join(str(get(n) or "") for n in ("SequenceName", "PulseSequenceName")),
        contrast_agent=get("ContrastBolusAgent") or "",
        acquisition_contrast=get("AcquisitionContrast") or "",
        image_type=" ".join(str(t) for t in list(image_type)[2:]),
        repetition_time=number("RepetitionTime"),
        echo_time=number("EchoTime"),
        inversion_time=number("InversionTime"),
    )


def normalise_modality(value: Any) -> str | None:
    """A CSV modality cell mapped onto :data:`MODALITIES` (case and spacing free); ``None`` if empty.

    Exact class names win ("t1 post", "T1_POST"); anything else goes through
    :func:`classify_modality` as if it were a series description.
    """
    text = clean_text(value)
    if not text:
        return None
    for name in MODALITIES:
        if text.upper() == name:
            return name
    return classify_modality(description=text)
