"""Integrity manifest of an exported folder: the sha256 and size of every file, checked by `twinloop verify`.

``manifest.json`` lists every regular file under the folder (itself excepted) by its POSIX relative path.
``verify`` names each problem: a file missing, truncated (shorter), grown, altered (same size, other hash),
or present but not listed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)


def write_manifest(folder: str | Path) -> Path:
    """Write ``folder/manifest.json`` for the folder's current files; returns its path."""
    folder = Path(folder)
    files = {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
             for name in _files(folder)}
    path = folder / MANIFEST
    path.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1, sort_keys=True) + "\n")
    return path


def verify(folder: str | Path) -> list[str]:
    """Problems found, one line each naming the file; an empty list means every file matches."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {folder} not found")
    path = folder / MANIFEST
    if not path.is_file():
        return [f"{MANIFEST}: missing (not an exported folder, or the manifest was deleted)"]
    try:
        listed = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"]
    problems = []
    for name, entry in sorted(listed.items()):
        file = folder / name
        if not file.is_file():
            problems.append(f"{name}: missing")
            continue
        size = file.stat().st_size
        if size < entry["size"]:
            problems.append(f"{name}: truncated ({size} of {entry['size']} bytes)")
        elif size > entry["size"]:
            problems.append(f"{name}: grown ({size} bytes, expected {entry['size']})")
        elif sha256_file(file) != entry["sha256"]:
            problems.append(f"{name}: altered (sha256 differs)")
    problems += [f"{name}: not in the manifest" for name in _files(folder) if name not in listed]
    return problems
