"""Registry of known weight files (installed as :mod:`geco_tf_weights`).

``registry.json`` lists each file the package knows how to load: its name, where it is
published, the layer names and shapes it must contain, and its SHA-256 where someone has the file.
"""

from __future__ import annotations

import json
from pathlib import Path

REGISTRY_PATH = Path(__file__).with_name("registry.json")


def load_registry() -> dict:
    """All registry entries, keyed by name."""
    return json.loads(REGISTRY_PATH.read_text())


def entry(name: str) -> dict:
    """One registry entry; KeyError if the name is unknown."""
    return load_registry()[name]
