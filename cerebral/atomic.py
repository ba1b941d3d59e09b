"""Write files so that a crash leaves either the old file or the new one, never half of one."""

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success, fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unwritable(path):
    """Why no file can be written at `path` (a folder in its place, a file above it), or None:
    for refusing an output before the work that would fill it."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    nearest = next(p for p in path.parents if p.exists())
    return None if nearest.is_dir() else f"{nearest} is a file"


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
