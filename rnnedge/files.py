"""Writing files so that a reader sees the old one or the new one, never a part: each file is
written to a temporary sibling, flushed, fsynced and renamed over its name (then the folder is
fsynced). A full or read-only disk is the user's problem, said in one line."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from rnnedge.errors import RnnEdgeError

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # linux/fs.h
_AT_FDCWD = -100
_COMMITTED: collections.deque[Path] = collections.deque(maxlen=16)  # results put in place, latest last


def committed(path: str | os.PathLike) -> None:
    """Note that a command's result (an export, a variant's manifest, an output file) is complete
    under its final name, so an interruption after this point says so instead of "discarded"."""
    _COMMITTED.append(Path(path))


def last_committed() -> Path | None:
    """The latest result still in place (a temporary folder committed to and later removed is not)."""
    return next((p for p in reversed(_COMMITTED) if p.exists()), None)


def committed_results() -> list[Path]:
    """Every result still in place, in the order they were written (`bench --json --plot` writes two)."""
    return list(dict.fromkeys(p for p in _COMMITTED if p.exists()))


# commit points open, a Ctrl-C that came inside one, and whether Ctrl-C came at all (no commit after it)
_HELD = {"depth": 0, "pending": False, "interrupted": False}


@contextlib.contextmanager
def held():
    """A commit point Ctrl-C does not cut in two (a rename and the record that it happened): the
    `rnnedge` command's handler (`rnnedge.interrupts`) defers a signal that arrives inside it, and
    KeyboardInterrupt is raised as the block ends, once the block is whole. None begins once Ctrl-C
    has come (`interrupt_noted`): KeyboardInterrupt instead, nothing renamed."""
    refuse_after_interrupt()
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        due = not _HELD["depth"] and _HELD["pending"]
        if due:
            _HELD["pending"] = False
    if due:
        raise KeyboardInterrupt


def holding() -> bool:
    """Whether a commit point (`held`) is open."""
    return _HELD["depth"] > 0


def defer_interrupt() -> None:
    """Ctrl-C came inside a commit point: raise it as the point ends."""
    _HELD["pending"] = True


def interrupt_noted(noted: bool = True) -> None:
    """Ctrl-C reached the command (`rnnedge.interrupts` says so): from now on no result is put in
    place, even where a library swallowed the KeyboardInterrupt and the command went on (an export
    would then finish and appear seconds after Ctrl-C). `noted=False`: the command took Ctrl-C as
    its normal end (`rnnedge serve`)."""
    _HELD["interrupted"] = noted


def refuse_after_interrupt() -> None:
    """KeyboardInterrupt where Ctrl-C has come and no commit point is open (one that is open ends whole)."""
    if _HELD["interrupted"] and not _HELD["depth"]:
        raise KeyboardInterrupt


_DISK_WHY = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("the disk is full", "free space or choose another folder"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or choose another folder"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a writable folder"),
    errno.EPERM: ("permission denied", "choose a writable folder"),
    errno.EEXIST: ("a part of the path is a file, not a folder", "choose another path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter one"),
}


def disk_error(path, e: OSError) -> RnnEdgeError:
    """One line for an OSError while writing `path` (None: the standard output): what happened and
    what to do."""
    why, fix = _DISK_WHY.get(e.errno, (e.strerror or type(e).__name__, "choose another folder"))
    if path is None:
        return RnnEdgeError(f"cannot write the standard output: {why}; redirect it somewhere that can take it")
    return RnnEdgeError(f"cannot write {path}: {why}; {fix} (nothing was replaced)")


def output_file(path: str | os.PathLike, *, force: bool, keep: dict | None = None) -> Path:
    """A file the user asked a command to write, checked before any work: refused in one line when
    it names a folder, a device or a pipe (a rename would replace the node itself), one of `keep`
    ({path: what it is}: the command's input, an export's own files), or an existing file without
    `force`."""
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise RnnEdgeError(f"output {str(path)!r}: expected a file name, e.g. out.npz")
    try:
        there = path.exists() or path.is_symlink()
    except OSError as e:  # a name too long, a loop of links: said as writing it would say it
        raise disk_error(path, e) from None
    if not there:
        return path
    if not path.is_file():
        raise RnnEdgeError(f"{path} is not a regular file (a folder, a device or a pipe): choose a file path to write")
    mine = path.resolve()
    for kept, what in (keep or {}).items():
        if Path(kept).exists() and mine == Path(kept).resolve():
            raise RnnEdgeError(f"{path} is {what}: choose another file to write")
    if not force:
        raise RnnEdgeError(f"{path} already exists: pass --force to replace it")
    return path


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
def atomic_path(final: str | os.PathLike, *, result: bool = False):
    """Yield a temporary path beside `final`; when the block ends without error the file there is
    fsynced and renamed onto `final`. On any error (or a signal) the temporary file is removed
    and `final` is untouched. OSError from the disk becomes RnnEdgeError. `result`: the file is
    the command's result, `committed` in the same step as the rename, which Ctrl-C does not cut
    in two (so "interrupted" never leaves the file written without saying so)."""
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
        with held():  # the commit point: renamed and recorded, or neither
            os.replace(tmp, final)
            if result:
                committed(final)
        fsync_dir(final.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(final, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, result: bool = False) -> Path:
    """`text` written to `path` atomically (`atomic_path`; `result`: the command's result)."""
    with atomic_path(path, result=result) as tmp:
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


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux renameat2(a, b, flags); False where the call or the flag is unsupported (other OSes,
    some file systems). OSError for every other failure (EEXIST for RENAME_NOREPLACE)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        fsync_dir(Path(b).parent)
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        return _renameat2(a, b, RENAME_EXCHANGE)
    except OSError as e:
        raise disk_error(b, e) from None


# -- temporary folders beside an output, and putting one in its place ----------------------------
# A run's temporary folder `.NAME.XXXX.tmp` is locked (flock) while the run lives: the lock goes with
# the process, so a folder nobody holds is a killed run's leftover, and one that is held belongs to a
# run still writing, which the next run leaves alone and refuses to race.

_LOCKS: dict[Path, int] = {}
_MADE: dict[Path, list[Path]] = {}  # temporary folder -> the folders above it that temp_dir created


def temp_dir(out: Path, suffix: str = ".tmp") -> Path:
    """A new, locked temporary folder beside `out`, on the same file system (so it can take `out`'s
    name in one rename). Release it with `replace_dir` or `discard_dir`."""
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent))
        fd = _flock(tmp)  # new and ours: nobody else can hold it
    except OSError as e:
        _remove_empty(made)
        raise disk_error(out, e) from None
    _LOCKS[tmp] = fd
    _MADE[tmp] = made
    return tmp


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _release(tmp: Path) -> None:
    _MADE.pop(tmp, None)
    fd = _LOCKS.pop(tmp, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the lock


def discard_dir(tmp: Path) -> None:
    """Remove a temporary folder of this run (after a failure), and the folders `temp_dir` made for
    it where they stayed empty, and drop its lock: a failed run leaves nothing behind."""
    shutil.rmtree(tmp, ignore_errors=True)
    _remove_empty(_MADE.get(tmp, []))
    _release(tmp)


def _flock(folder: Path) -> int | None:
    """A descriptor of `folder` holding its exclusive lock, or None when a live run holds it
    already. OSError when the folder cannot be opened."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _held(folder: Path) -> bool:
    """A live run holds this temporary folder's lock."""
    if folder in _LOCKS:
        return True
    try:
        fd = _flock(folder)
    except OSError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


@contextlib.contextmanager
def changing(folder: Path):
    """Hold an export folder's lock while changing it in place (`quantize`, `ort`): a second run
    changing the same folder is refused in one line instead of losing one run's manifest entries
    or deleting its scratch. A folder this process is already writing (an export's temporary
    folder, quantized before it is placed) is ours already."""
    folder = Path(folder)
    if folder in _LOCKS:
        yield
        return
    try:
        fd = _flock(folder)
    except OSError:
        yield  # not a folder we can open: the command's own checks say so in its words
        return
    if fd is None:
        raise RnnEdgeError(f"another rnnedge run is changing {folder} now; wait for it to finish")
    try:
        yield
    finally:
        os.close(fd)


def _siblings(out: Path, suffix: str) -> list[Path]:
    return sorted(p for p in out.parent.glob(f".{glob.escape(out.name)}.*{suffix}") if p.is_dir()) \
        if out.parent.is_dir() else []


def new_folder(out: Path, *, force: bool, marker: str = "manifest.json", what: str = "--out") -> None:
    """Refuse, in one line and before any work, an `out` that a run must not write: '.', '..', '/'
    or a folder holding the current one; a file; an existing folder without `force`; with `force`,
    a folder that is not one of ours (no `marker` file) and not empty."""
    resolved = out.resolve()
    if out.name in ("", ".", "..") or resolved == Path(resolved.anchor) or Path.cwd().is_relative_to(resolved):
        raise RnnEdgeError(f"{what} {out}: expected a new folder for the export (e.g. {what} exported/model), "
                           "not the current folder or one above it")
    if out.exists() and not out.is_dir():
        raise RnnEdgeError(f"{out} exists and is not a folder; choose another {what}")
    if out.exists() and not force:
        raise RnnEdgeError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and not (out / marker).is_file() and any(out.iterdir()):
        raise RnnEdgeError(f"{out} is not an export folder (no {marker}): --force replaces only exports; "
                           f"move it away yourself, or choose another {what}")


def recover_dir(out: Path, marker: str = "manifest.json") -> None:
    """Tidy after a run that was killed, before writing `out`: put back an export left aside by an
    interrupted two-step replacement (no RENAME_EXCHANGE), and remove the temporary and left-aside
    folders of `out` that no live run holds. A live run writing `out` now: RnnEdgeError."""
    busy = [p for p in _siblings(out, ".tmp") + _siblings(out, ".old") if _held(p)]
    if busy:
        raise RnnEdgeError(f"another rnnedge run is writing {out} now (its folder {busy[0].name} is in use); "
                           "wait for it to finish, or choose another --out")
    for old in _siblings(out, ".old"):
        kept = old / out.name
        if not out.exists() and (kept / marker).is_file():
            os.replace(kept, out)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _siblings(out, ".tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, out: Path, force: bool = True) -> None:
    """The new folder takes `out`'s name in one step: a rename that refuses to replace anything
    (RENAME_NOREPLACE) when `out` is new, an atomic exchange (RENAME_EXCHANGE) when it replaces an
    export (`force`), so a reader (or a kill) sees the old export or the new one. Without renameat2:
    two renames, undone by `recover_dir` next run. Without `force`, an `out` that appeared while
    this run worked (another run's) is kept: RnnEdgeError, `tmp` left for the caller to discard."""
    refuse_after_interrupt()  # before the two-step replacement's folder is made, too
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the export gets a folder's usual mode
    fsync_dir(tmp)
    appeared = RnnEdgeError(f"{out} was written by another run while this one worked; nothing was replaced: "
                            "pass --force to replace it, or choose another --out")
    try:
        if out.exists():
            if not force:
                raise appeared
            with held():  # the commit point: swapped and recorded, or neither
                swapped = exchange(tmp, out)
                if swapped:
                    committed(out)
            if swapped:  # tmp now holds the old export
                shutil.rmtree(tmp, ignore_errors=True)
                _release(tmp)
                return
            old = temp_dir(out, suffix=".old")
            with held():
                os.replace(out, old / out.name)
                os.replace(tmp, out)
                committed(out)
            fsync_dir(out.parent)
            discard_dir(old)
        else:
            with held():
                try:
                    placed = _renameat2(tmp, out, RENAME_NOREPLACE)
                except FileExistsError:
                    placed = None
                if placed is False:
                    os.replace(tmp, out)
                if placed is not None:
                    committed(out)
            if placed is None:
                if not force:
                    raise appeared from None
                return replace_dir(tmp, out, force)
            fsync_dir(out.parent)
    except OSError as e:
        raise disk_error(out, e) from None
    _release(tmp)
