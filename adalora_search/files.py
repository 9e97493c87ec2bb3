"""Files written for the user (report, export, kept adapters): whole or not at all, errors said plainly.

Each file is written under a temporary name in its own folder and renamed into place (``os.replace``,
atomic on one file system), so a reader never sees half a file and a failed write leaves nothing
behind. A full disk, a read-only or missing folder, a path under a regular file: an ``OSError``
(and safetensors' own error for model weights) becomes a ``UserError`` naming the path, the reason
and the fix, so the command exits with code 2. Files get the modes the umask gives new files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adalora_search.errors import UserError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the folder does not exist or cannot hold new files",
    errno.EEXIST: "a file is in the way: a part of the path is a file, not a folder",
    errno.EBUSY: "the path is in use (a mount point, or the working directory)",
}
_FULL = {errno.ENOSPC, errno.EDQUOT}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes, field: str = "--out") -> None:
    """Write ``data`` to ``path`` atomically (temporary name beside it, then renamed).

    Raises:
        UserError: the file cannot be written (naming ``field``, the path and the reason); nothing is left.
    """
    with writing(path, field):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_text(path: Path, text: str, field: str = "--out") -> None:
    """``write_bytes`` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"), field)


def make_dir(path: Path, field: str = "--out") -> None:
    """Create ``path`` (and its parents); ``UserError`` when it cannot be a folder."""
    with writing(path, field):
        path.mkdir(parents=True, exist_ok=True)


def default_modes(root: Path) -> None:
    """Give a tree written through temporary files the modes of new files (0644/0755 under umask 022)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for directory, folders, names in os.walk(root):
        for name in folders:
            os.chmod(Path(directory) / name, 0o777 & ~mask)
        for name in names:
            os.chmod(Path(directory) / name, 0o666 & ~mask)


@contextlib.contextmanager
def writing(path: Path, field: str = "--out") -> Iterator[None]:
    """Turn a failed write under ``path`` into a ``UserError`` naming ``field``, the path and the reason."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if not isinstance(exc, OSError) and type(exc).__name__ != "SafetensorError":
            raise
        full = getattr(exc, "errno", None) in _FULL or "no space" in reason(exc)
        fix = "free space or choose another folder" if full else "choose another path"
        raise UserError(
            f"{field} = {str(path)!r}: cannot write there ({reason(exc)}); {fix}, then run the command again"
        ) from None


def reason(exc: BaseException) -> str:
    """A short reason for a failed write: the errno's meaning, else the library's message."""
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{_REASONS[exc.errno]}{where}"
    text = str(exc)
    if "StorageFull" in text or "No space left" in text:  # safetensors reports ENOSPC in its own words
        return "no space left on the device"
    return f"{type(exc).__name__}: {text[:200]}"
