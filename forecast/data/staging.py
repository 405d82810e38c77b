"""Temporary names beside an output that say which process writes them, and the sweep of the
ones whose writer is gone.

Every output (a Parquet file, or the Ray engine's folder) is first written under a hidden name
in the same folder and renamed into place when complete, so a killed run never leaves a partial
output. It does leave its temporary file behind; the name says whose it is:

    .<output name>.<host>.<pid>.<start>.<random>.tmp    (or .old: the Ray engine's swap)

`host` is the host name plus the PID namespace (so two containers with the same host name are
not confused), `start` the process start time from /proc (so a recycled PID, as in a restarted
container, is not mistaken for the old writer). At the start of every write, `sweep_stale`
removes the leftovers beside the target whose writer process no longer exists; those of a live
writer (a concurrent run) and those from other hosts, which this one cannot check, are kept.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

from forecast.errors import OutputError

log = logging.getLogger(__name__)

SUFFIXES = (".tmp", ".old")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; starttime is field 22.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@lru_cache(maxsize=1)
def _host() -> str:
    """This host and PID namespace, as a name-safe token without dots."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return f"{name}-{namespace}"


def writer_token() -> str:
    """`host.pid.start` of this process: what a temporary name carries."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{_start_time(pid) or 0}"


def staging_path(target: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside `target` that carries this process's token."""
    target = Path(target)
    if suffix not in SUFFIXES:
        raise ValueError(f"suffix must be one of {SUFFIXES}, got {suffix!r}")
    return target.parent / f".{target.name}.{writer_token()}.{secrets.token_hex(4)}{suffix}"


def _writer(target: Path, candidate: Path) -> tuple[str, int, int] | None:
    """(host, pid, start) from a temporary name of `target`, or None if it is not one."""
    prefix = f".{target.name}."
    name = candidate.name
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None or not name.startswith(prefix):
        return None
    parts = name[len(prefix) : -len(suffix)].split(".")
    if len(parts) != 4 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], int(parts[1]), int(parts[2])


def writer_alive(host: str, pid: int, start: int) -> bool:
    """Whether the writer may still run: True for other hosts, which cannot be checked here."""
    if host != _host():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, but alive
    now = _start_time(pid)
    return start == 0 or now is None or now == start


def remove(path: Path) -> None:
    """Delete a file or a folder tree; one already gone (a concurrent sweep) is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders beside `target` left by writers that are gone.

    A dead writer's `.old` (the Ray engine's previous output, moved aside for the swap) is
    renamed back to `target` when `target` is missing, so a kill between the two renames of the
    swap never loses the previous output. Returns what was removed or restored.
    """
    target = Path(target)
    try:
        entries = list(target.parent.iterdir()) if target.parent.is_dir() else []
    except OSError:
        return []  # an unreadable folder: writing there fails next, with a clearer error
    swept: list[Path] = []
    foreign: list[str] = []
    for entry in sorted(entries, key=lambda p: p.name):
        writer = _writer(target, entry)
        if writer is None:
            continue
        if writer_alive(*writer):
            if writer[0] != _host():
                foreign.append(entry.name)
            continue
        try:
            if entry.name.endswith(".old") and not os.path.lexists(target):
                os.rename(entry, target)
                log.warning("restored %s from %s, left by a killed run", target, entry.name)
            else:
                remove(entry)
        except OSError as err:
            log.warning("could not remove %s, left by a killed run: %s", entry, err)
            continue
        swept.append(entry)
    if swept:
        log.info("removed %d temporary file(s) beside %s left by killed runs", len(swept), target)
    if foreign:
        log.info("kept temporary files of writers on other hosts beside %s: %s", target, ", ".join(foreign))
    return swept


def output_error(target: str | os.PathLike, err: OSError) -> OutputError:
    """An OSError met while writing `target`, as the one-line OutputError a user can act on."""
    target = Path(target)
    blocker = next((p for p in [target.parent, *target.parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        reason = f"{blocker} is a file, not a folder"
    elif isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"no permission to write in {target.parent} ({err.strerror or err})"
    elif err.errno == errno.ENOSPC:
        reason = f"no space left on the device of {target.parent}"
    else:
        reason = err.strerror or str(err)
    return OutputError(f"cannot write the output {target}: {reason}")


def prepare_output(target: str | os.PathLike, folder: bool = False) -> Path:
    """Sweep leftovers beside `target` and prove it can be written, before any work is done.

    `folder`: the output is a folder (engine=ray) rather than one file. Raises OutputError.
    """
    target = Path(target)
    kind, other = ("a folder", "file") if folder else ("one Parquet file", "folder")
    if target.exists() and target.is_dir() != folder:
        raise OutputError(
            f"cannot write the output {target}: it is a {other}, and this engine writes {kind}; "
            "give another path or remove it"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target)
        probe = staging_path(target)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise output_error(target, err) from err
    return target


def fsync_tree(path: str | os.PathLike) -> None:
    """Flush a written file (or every file of a folder) and its folder to disk before a rename.

    A rename is atomic against a crash of the process, but after a power cut the renamed
    file could be empty unless its data reached the disk first; with the data flushed, the
    output is the old one or the complete new one. Folders are flushed where the file system
    allows it (some refuse fsync on a folder: that costs nothing but the rename's durability).
    """
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    folders = [p for p in path.rglob("*") if p.is_dir()] + [path] if path.is_dir() else []
    for item in files:
        _fsync(item)
    for folder in [*folders, path.parent]:
        try:
            _fsync(folder)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EISDIR):
                raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold `.<name>.lock` beside `target` while a run makes it: an identical run started at the
    same instant waits here, then finds the output done. The file goes when released; a waiter
    that wakes on a lock file unlinked meanwhile takes the new one (an fcntl lock, POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        yield
        return
    target = Path(target)
    lock = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another run is making %s; waiting for it to finish", target)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this one on release: take the current file
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
