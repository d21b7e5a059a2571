"""What the tests compare files by: a file's sha256, and every file under some folders with its bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under `roots` (or the file itself), with its bytes."""
    files = {}
    for root in roots:
        for path in ([root] if root.is_file() else sorted(root.rglob("*"))):
            if path.is_file():
                files[path] = path.read_bytes()
    return files
