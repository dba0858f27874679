"""Writing files so that a reader sees the old one or the new one, never a part: each file is
written to a temporary sibling, flushed, fsynced and renamed over its name (then the folder is
fsynced). A full or read-only disk is the user's problem, said in one line."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import glob
import os
import shutil
import tempfile
from pathlib import Path

from rnnedge.errors import RnnEdgeError

RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def disk_error(path, e: OSError) -> RnnEdgeError:
    """One line for an OSError while writing `path`."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied"}.get(e.errno, e.strerror or type(e).__name__)
    return RnnEdgeError(f"cannot write {path}: {why}; free space or choose a writable folder (nothing was replaced)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; when the block ends without error the file there is
    fsynced and renamed onto `final`. On any error (or a signal) the temporary file is removed
    and `final` is untouched. OSError from the disk becomes RnnEdgeError."""
    final = Path(final)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
    except OSError as e:
        raise disk_error(final, e) from None
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file gets a file's usual mode
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(final, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def place(tmp: Path, final: Path) -> None:
    """Move a file written elsewhere in the same file system onto `final`, durably."""
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        raise disk_error(final, e) from None


def digest(path: Path) -> dict:
    """{"sha256", "size"} of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": path.stat().st_size}


def plain_name(name, what: str) -> str:
    """A file name inside an export folder: no folders, no '..', nothing absolute."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RnnEdgeError(f"manifest.json {what} names {name!r}, which is not a file inside the export folder; "
                           "re-export the model")
    return name


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        fsync_dir(Path(b).parent)
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise disk_error(b, OSError(err, os.strerror(err)))


def _siblings(out: Path, suffix: str) -> list[Path]:
    return sorted(p for p in out.parent.glob(f".{glob.escape(out.name)}.*{suffix}") if p.is_dir()) \
        if out.parent.is_dir() else []


def recover_dir(out: Path, marker: str = "manifest.json") -> None:
    """Tidy after a run that was killed: put back an export left aside by an interrupted two-step
    replacement (no RENAME_EXCHANGE), and remove the temporary and left-aside folders of `out`."""
    for old in _siblings(out, ".old"):
        kept = old / out.name
        if not out.exists() and (kept / marker).is_file():
            os.replace(kept, out)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _siblings(out, ".tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, out: Path) -> None:
    """The new folder takes `out`'s name in one step: rename when `out` is new, an atomic exchange
    (renameat2 RENAME_EXCHANGE) when it replaces an export, so a reader (or a kill) sees the old
    export or the new one. Without RENAME_EXCHANGE: two renames, undone by `recover_dir` next run."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the export gets a folder's usual mode
    fsync_dir(tmp)
    try:
        if out.exists():
            if exchange(tmp, out):  # tmp now holds the old export
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            fsync_dir(out.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
            fsync_dir(out.parent)
    except OSError as e:
        raise disk_error(out, e) from None
