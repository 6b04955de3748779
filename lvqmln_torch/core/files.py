"""Atomic file writes: a reader sees either the complete new file or the old one, never a
half-written file (used by the CSV prediction writer, the exporters and the plots)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` with a temporary path in the target's folder, then rename the result
    onto ``path`` (``os.replace`` is atomic within a file system). Parent folders are created;
    on any error the temporary file is removed and ``path`` is left untouched.

    Args:
        path: the file to write.
        write: writes the complete content to the path it is given.

    Returns:
        ``path`` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (see
    [`atomic_write`][lvqmln_torch.core.files.atomic_write]).

    Returns:
        ``path`` as a `Path`.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(text)

    return atomic_write(path, write)
