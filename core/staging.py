"""Files staged in an output folder before they get their final names (see :mod:`ovquant.output`).

A staged file is unnamed (Linux ``O_TMPFILE``) where the system allows, else a named temporary
``.ovquant-tmp-<pid>-<random>.<ext>``; it is locked (flock) while this process holds it. Also here: the
folder lock, directory fsync, the probe that a folder is writable, and SHA-256 of file descriptors.
"""
import contextlib
import errno
import hashlib
import os
import re
import secrets
import sys
from typing import Optional

try:
    import fcntl
except ImportError:   # not POSIX: no advisory locks
    fcntl = None

TMP_PREFIX = ".ovquant-tmp-"
_TMP_RE = re.compile(r"^\.ovquant-tmp-(\d+)-([0-9a-f]{12})\.(xml|bin|report\.json|report\.html|journal|probe)$")
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _sha256_fd(fd: int) -> tuple:
    h, n, off = hashlib.sha256(), 0, 0
    while True:
        chunk = os.pread(fd, 1 << 22, off)
        if not chunk:
            return n, h.hexdigest()
        h.update(chunk)
        n += len(chunk)
        off += len(chunk)


def _sha256_file(path: str) -> tuple:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        return _sha256_fd(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(folder: str):
    """An exclusive advisory lock on ``folder`` (serialises ovquant commits and clean-ups in it); yields the
    folder's fd (for fsync) or None where it cannot be opened or locked."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield None
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield fd
    finally:
        os.close(fd)


def _fsync_dir(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.fsync(fd)
        except OSError:
            pass


_libc = []


def _linkat():
    """libc's linkat (Python's os.link does not follow /proc/self/fd links), or None."""
    if not _libc:
        try:
            import ctypes
            import ctypes.util

            fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).linkat
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            _libc.append((fn, ctypes))
        except (OSError, AttributeError, ImportError):
            _libc.append(None)
    return _libc[0]


def _link_fd(fd: int, path: str) -> None:
    """Give the unnamed file open as ``fd`` the name ``path``."""
    fn, ctypes = _linkat()
    AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
    if fn(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(path), AT_SYMLINK_FOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def _tmpfile_ok(folder: str) -> bool:
    return hasattr(os, "O_TMPFILE") and sys.platform.startswith("linux") and \
        os.path.isdir(f"/proc/{os.getpid()}/fd") and _linkat() is not None


def _probe(folder: str) -> None:
    """Create (and drop) a file in ``folder``: the real test of permissions, ACLs and read-only mounts."""
    if _tmpfile_ok(folder):
        try:
            os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
    path = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.probe")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(path)


class _Staged:
    """A file being written into ``folder``: unnamed (``O_TMPFILE``, it vanishes with the process) where the
    system allows, else a named temporary; locked (flock) for as long as this process holds it."""

    def __init__(self, folder: str, token: str, ext: str):
        self.folder = folder
        self.path = os.path.join(folder, f"{TMP_PREFIX}{token}.{ext}")
        self.named = self.linked = False
        self.fd = -1
        if _tmpfile_ok(folder):
            try:
                self.fd = os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o666)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            self.named = True
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def open_path(self) -> str:
        """A path through which other code (OpenVINO) writes this file."""
        if not self.named and not self.linked:
            try:
                os.symlink(f"/proc/{os.getpid()}/fd/{self.fd}", self.path)
                self.linked = True
            except OSError:   # a file system without symlinks: a named temporary instead
                self.publish()
        return self.path

    def unlink_path(self) -> None:
        if self.linked:
            self.linked = False
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def publish(self) -> None:
        """Give the file its temporary name (an unnamed file is linked into the folder)."""
        if not self.named:
            self.unlink_path()
            _link_fd(self.fd, self.path)
            self.named = True

    def close(self, remove: bool = True) -> None:
        self.unlink_path()
        if self.named and remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_problem(exc: BaseException, folder: str) -> str:
    """One line for a failed write: a full disk is said so (OpenVINO's own message is an iostream error)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return exc.strerror or os.strerror(exc.errno)
    try:
        vfs = os.statvfs(folder)
        if vfs.f_bavail * vfs.f_frsize < (1 << 20):
            return os.strerror(errno.ENOSPC)
    except (OSError, AttributeError):
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [l.strip() for l in str(exc).splitlines() if l.strip() and "Exception from" not in l]
    return _one_line(lines[0] if lines else type(exc).__name__)
