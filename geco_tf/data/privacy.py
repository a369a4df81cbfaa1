"""Pseudonyms and scrubbing: nothing that identifies a patient leaves the input archive.

Subject and series ids in a dataset are keyed hashes (HMAC-SHA256) of the Patient ID and the
Series Instance UID. With the key, the data owner can recompute an id from a header and find the
series again; without it, the ids cannot be reversed or guessed by hashing candidate names (a
plain hash could). The key therefore never goes into the dataset directory: it is read from
``--key-file`` or generated once and kept *beside* the dataset (``DATA.key``), so a dataset can be
shared while the key stays home. Reusing one key keeps pseudonyms stable across runs and datasets.

Everything else written (skipped.csv paths and reasons, log lines) passes through
:class:`Scrubber`, which removes UIDs and the names, birth dates, accession numbers and patient
ids seen in the archive's headers, because hospital exports name folders after exactly those.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from geco_tf.errors import UserError
from geco_tf.io import write_text_atomic

KEY_BYTES = 32
#: A DICOM UID (or any dotted OID-like number with four or more parts, e.g. in a folder name).
UID_PATTERN = re.compile(r"(?<![\d.])\d+(?:\.\d+){3,}")
REDACTED = "[redacted]"
_WORD = re.compile(r"[a-z0-9]+")


def default_key_path(out_dir: str | os.PathLike) -> Path:
    """Where the generated key lives: beside the dataset directory, named after it."""
    out = Path(out_dir).resolve()
    return out.parent / f"{out.name}.key"


def load_or_create_key(
    path: str | os.PathLike, out_dir: str | os.PathLike, write: bool = True
) -> tuple[bytes, bool]:
    """Read the pseudonym key at ``path``, or create a random one there; return (key, created).

    Refuses a key path inside ``out_dir``: a key shipped with its dataset would undo the
    pseudonyms. ``write=False`` makes a new key without saving it yet (see :func:`save_key`), so a
    run that fails on its input leaves no key file behind.
    """
    path = Path(path)
    out = Path(out_dir).resolve()
    resolved = path.resolve()
    if resolved == out or out in resolved.parents:
        raise UserError(f"--key-file {path}: the key must be kept outside the dataset directory {out_dir}")
    if path.exists():
        if not path.is_file():
            raise UserError(f"--key-file {path}: not a file")
        text = path.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = text.encode()
        if len(key) < 16:
            raise UserError(f"--key-file {path}: key too short (need at least 16 bytes, e.g. 32 hex pairs)")
        return key, False
    key = secrets.token_bytes(KEY_BYTES)
    if write:
        save_key(path, key)
    return key, True


def save_key(path: str | os.PathLike, key: bytes) -> None:
    """Write ``key`` as hex to ``path``, readable by its owner only, atomically."""
    path = Path(path)
    old_umask = os.umask(0o077)
    try:
        write_text_atomic(path, key.hex() + "\n")
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)


def key_fingerprint(key: bytes) -> str:
    """A short public fingerprint of the key: tells which key made a dataset, reveals nothing."""
    return hashlib.sha256(b"geco-tf key fingerprint\0" + key).hexdigest()[:12]


def pseudonym(key: bytes, value: str, prefix: str, length: int = 12) -> str:
    """``prefix-<hex>``: HMAC-SHA256 of ``value`` under ``key``, truncated to ``length`` hex digits."""
    digest = hmac.new(key, f"{prefix}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:length]}"


class Scrubber:
    """Removes identifying text from anything the tool writes or prints.

    ``add`` registers values met in headers (patient names and their components, birth dates,
    accession numbers, patient ids); ``scrub`` replaces them -- and every UID-like number -- by
    ``[redacted]``, and turns absolute paths under ``root`` into relative ones.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = str(Path(root).resolve()) if root is not None else None
        self._single: set[str] = set()  # whole values that are one word, lower case
        self._multi: dict[str, set[str]] = {}  # first word -> whole values of several words
        self._parts: set[str] = set()  # single name components, lower case

    def _register(self, value: str) -> None:
        words = _WORD.findall(value)
        if len(words) == 1 and words[0] == value:
            self._single.add(value)
        elif words:
            self._multi.setdefault(words[0], set()).add(value)

    def add(self, values: Iterable[object]) -> None:
        """Register identifying values; names are also registered per component."""
        for value in values:
            if value is None:
                continue
            text = str(value).strip().lower()
            if not text:
                continue
            self._register(text)
            parts = [p for p in re.split(r"[\^\s,=]+", text) if p]
            if len(parts) > 1:
                self._parts.update(p for p in parts if len(p) >= 2)
                self._register(" ".join(parts))
            if re.fullmatch(r"\d{8}", text):  # a DA date: also its ISO spelling
                self._register(f"{text[:4]}-{text[4:6]}-{text[6:]}")

    def scrub(self, text: object, parts: bool = True) -> str:
        """``text`` with the root made relative, UIDs and registered identifiers redacted.

        ``parts=True`` also redacts single name components ("Jane" of "Doe^Jane"): right for
        paths, which exports build from names; messages use ``parts=False``, because a
        component may be an ordinary word ("R3.2.2 Enhanced Dicom Phantom"). Matching is
        case-insensitive and at word edges only; values are looked up by word, so the cost does
        not grow with the number of patients registered.
        """
        out = str(text)
        if self.root:
            out = out.replace(self.root + os.sep, "").replace(self.root, ".")
        out = UID_PATTERN.sub(REDACTED, out)
        lower = out.lower()
        words = set(_WORD.findall(lower))
        hits = {w for w in words if w in self._single or (parts and w in self._parts)}
        for word in words:
            hits.update(v for v in self._multi.get(word, ()) if v in lower)
        if hits:
            body = "|".join(re.escape(v) for v in sorted(hits, key=len, reverse=True))
            out = re.sub(rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9])", REDACTED, out, flags=re.IGNORECASE)
        return out
