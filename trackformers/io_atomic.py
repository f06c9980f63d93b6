"""Atomic output files: written under a temporary name in the same directory, then renamed.

A reader (or a later run) therefore sees either the complete old file, the complete new file,
or no file, never a truncated one: a write that fails (full disk, EFBIG, an exception in the
writer, a kill) leaves at most a hidden ``.<name>.tmp-*`` file, which is removed when the
failure is a Python exception. ``os.replace`` is atomic within one file system, which the
same-directory temporary name guarantees.

    with atomic_path(out_dir / "particles.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text_atomic(out_dir / "metrics.json", json.dumps(summary))
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` on success.

    The temporary name keeps the suffix of ``path`` (writers such as ``savefig`` or
    ``to_csv`` infer the format or compression from it). On an exception the temporary file
    is removed, ``path`` keeps its previous content (or stays absent), and the error is
    re-raised naming ``path``.

    Args:
        path: the final file name; its parent directory is created.

    Yields:
        The temporary path (not yet existing) to write the complete content to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and str(path) not in str(err):
            raise OSError(err.errno, f"writing {path} failed: {err.strerror or err}") from err
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``.

    Args:
        path: the file.
        text: its content.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_csv_atomic(path: str | os.PathLike, table, **kwargs) -> Path:
    """``table.to_csv(path, index=False, **kwargs)`` atomically; returns ``path``.

    Args:
        path: the file.
        table: a pandas DataFrame.
        **kwargs: further ``to_csv`` arguments.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, **{"index": False, **kwargs})
    return path
