"""What every family's save() writes beside its booster: a JSON file of metadata with a format
version, checked on load so that a model saved by another layout is refused with what to do."""

from __future__ import annotations

import json
from pathlib import Path


def read_meta(folder: Path, name: str, what: str, expected: int) -> dict:
    """The metadata `folder/name`; ValueError when it was saved in another format than `expected`."""
    meta = json.loads((folder / name).read_text())
    if meta.get("format_version") != expected:
        raise ValueError(f"{folder}: {what} format {meta.get('format_version')} is not {expected}; "
                         "retrain it with this version of Quanyu")
    return meta
