"""Writing outputs atomically, file by file.

Output protocol (``save_outputs``): the ``.xml``, ``.bin`` and ``.report.json`` of a run are written as
unnamed files inside the output folder (Linux ``O_TMPFILE``; elsewhere named temporaries), synced, then,
under an advisory lock on the folder, linked to temporary names, listed in a small journal, renamed over
the final names one by one and the journal removed. A run killed before the journal exists leaves at most
dangling links (no model copy); one killed after it leaves a journal that the next run completes. Only
files named ``.ovquant-tmp-<pid>-<random>.<ext>`` are ever cleaned up, and only when no live process holds
them. The folder itself (inode, owner, group, mode) is never replaced.
"""
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import signal
import sys
import threading
from typing import Iterable, Optional

try:
    import fcntl
except ImportError:   # not POSIX: no advisory locks
    fcntl = None

import openvino as ov

from .config import output_name_problem
from .errors import OVQuantError


TMP_PREFIX = ".ovquant-tmp-"
_TMP_RE = re.compile(r"^\.ovquant-tmp-(\d+)-([0-9a-f]{12})\.(xml|bin|report\.json|journal|probe)$")
#: the report key that records the files a run wrote (how ovquant recognises its own earlier output)
RECORD_KEY = "output_files"
_MAX_REPORT_BYTES = 64 << 20
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}


def output_files(output_dir: str, name: str) -> dict:
    """The paths a run writes: ``{"xml": ..., "bin": ..., "report": ...}``."""
    return {k: os.path.join(output_dir, f"{name}{ext}") for k, ext in
            (("xml", ".xml"), ("bin", ".bin"), ("report", ".report.json"))}


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


def _dead(path: str) -> Optional[int]:
    """For an ovquant temporary: an fd holding its lock when no live process holds it (a killed run's),
    -1 for a dangling link of a killed run, else None (a live run's, or not ours)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            return None
        if re.fullmatch(r"/proc/\d+/fd/\d+", target) and not os.path.exists(path):
            return -1
        return None
    if not stat.S_ISREG(st.st_mode) or fcntl is None:
        return None
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():   # another user's: never replayed or removed
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _read_journal(fd: int) -> Optional[list]:
    """The (temporary, final) renames of a journal, or None when it is not a whole, valid journal."""
    try:
        raw = os.pread(fd, 1 << 20, 0)
        doc = json.loads(raw.decode("utf-8"))
        renames = doc["renames"]
        body = json.dumps(renames, sort_keys=True).encode()
        if doc.get("sha256") != hashlib.sha256(body).hexdigest():
            return None
        out = []
        for tmp, final in renames:
            if not (isinstance(tmp, str) and _TMP_RE.match(tmp) and isinstance(final, str)
                    and final.endswith((".xml", ".bin", ".report.json")) and "/" not in final
                    and os.sep not in final and not final.startswith(".")):
                return None
            out.append((tmp, final))
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover(folder: str) -> list:
    """Finish or remove what killed ovquant runs left in ``folder`` (call with the folder locked): a valid
    journal's renames are completed (its files were all written and synced), every other temporary of a
    dead run is removed. Files not named like ovquant's temporaries, those of live runs and those of other
    users are left alone. Returns the names handled."""
    try:
        names = sorted(n for n in os.listdir(folder) if _TMP_RE.match(n))
    except OSError:
        return []
    done = []
    for n in sorted(names, key=lambda n: not n.endswith(".journal")):   # journals first
        path = os.path.join(folder, n)
        fd = _dead(path)
        if fd is None:
            continue
        try:
            if n.endswith(".journal") and fd >= 0:
                for tmp, final in _read_journal(fd) or []:
                    t = os.path.join(folder, tmp)
                    try:
                        st = os.lstat(t)
                        if stat.S_ISREG(st.st_mode) and st.st_uid == os.fstat(fd).st_uid:
                            os.rename(t, os.path.join(folder, final))
                    except OSError:
                        pass
            os.unlink(path)
            done.append(n)
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)
    return done


def _record(folder: str, name: str) -> Optional[dict]:
    """What the ``<name>.report.json`` in ``folder`` records of the files its run wrote, or None."""
    path = output_files(folder, name)["report"]
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_REPORT_BYTES:
            return None
        with open(path, "rb") as f:
            rec = json.loads(f.read().decode("utf-8")).get(RECORD_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(rec, dict):
        return None
    try:
        if not all(isinstance(rec[f"{name}{e}"]["sha256"], str) and isinstance(rec[f"{name}{e}"]["bytes"], int)
                   for e in (".xml", ".bin")):
            return None
    except (KeyError, TypeError):
        return None
    return rec


def _ours(folder: str, name: str) -> set:
    """The keys ("xml", "bin", "report") of the existing output files that ovquant wrote, unchanged since."""
    rec = _record(folder, name)
    if rec is None:
        return set()
    out = {"report"}
    for key, path in output_files(folder, name).items():
        if key == "report":
            continue
        want = rec[os.path.basename(path)]
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size == want["bytes"] and \
                    _sha256_file(path) == (want["bytes"], want["sha256"]):
                out.add(key)
        except OSError:
            pass
    return out


def _input_paths(inputs: Iterable) -> list:
    out = []
    for p in inputs or ():
        if isinstance(p, (str, os.PathLike)) and os.fspath(p):
            p = os.fspath(p)
            out.append(p)
            if p.lower().endswith(".xml"):
                out.append(os.path.splitext(p)[0] + ".bin")
    return out


def _check_targets(folder: str, name: str, inputs: Iterable, overwrite: bool) -> dict:
    """Refuse (one line) to replace a folder, an input, a file ovquant did not write (unless ``overwrite``)
    or a file that a sticky folder does not let this user replace. Returns {key: mode} of existing files."""
    ins = _input_paths(inputs)
    ours = None
    modes = {}
    try:
        dst = os.stat(folder)
    except OSError:
        return modes
    euid = os.geteuid() if hasattr(os, "geteuid") else 0
    for key, path in output_files(folder, name).items():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OVQuantError(f"{path}: cannot check the existing file: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise OVQuantError(f"{path}: is a folder; ovquant would write a file of that name "
                               "(give another -n/--name or -o/--output-dir)")
        if dst.st_mode & stat.S_ISVTX and euid not in (0, st.st_uid, dst.st_uid):
            raise OVQuantError(f"{path}: belongs to another user in a sticky folder, which does not let ovquant "
                               "replace it (give another -n/--name or -o/--output-dir)")
        modes[key] = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
        if overwrite:
            continue
        for inp in ins:
            try:
                same = os.path.samefile(inp, path)
            except OSError:
                same = False
            if same:
                raise OVQuantError(f"{path}: is an input of this run; refusing to write over it (give another "
                                   "-o/--output-dir or -n/--name, or --overwrite to replace it)")
        if ours is None:
            ours = _ours(folder, name)
        if key not in ours:
            raise OVQuantError(f"{path}: exists and was not written by ovquant (or was changed since); refusing "
                               "to replace it (give another -o/--output-dir or -n/--name, or --overwrite)")
    return modes


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


def _name_problem(name) -> Optional[str]:
    problem = output_name_problem(name)
    if problem is None and any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "must not contain control characters (a newline, a tab, ...)"
    return problem


def _output_folder(output_dir, name: str) -> str:
    """The resolved output folder, after checking the name and the folder argument (one-line errors)."""
    problem = _name_problem(name)
    if problem:
        raise OVQuantError(f"output name {name!r}: {problem}")
    if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir).strip():
        raise OVQuantError(f"output folder {output_dir!r}: must be a folder path (give -o/--output-dir DIR)")
    return os.path.realpath(os.fspath(output_dir))


def check_output(output_dir, name: str, inputs: Iterable = (), overwrite: bool = False) -> str:
    """Before calibration: can ``<name>.xml``/``.bin``/``.report.json`` be written into ``output_dir``
    without touching anything ovquant does not own? Finishes or removes what earlier killed runs left there.
    Raises :class:`OVQuantError` (one line) when not; returns the resolved folder."""
    folder = _output_folder(output_dir, name)
    if os.path.isdir(folder):
        with _locked(folder):
            recover(folder)
            try:
                _probe(folder)
            except OSError as exc:
                raise OVQuantError(f"{folder}: cannot write into the output folder: {exc.strerror}") from None
            _check_targets(folder, name, inputs, overwrite)
        return folder
    if os.path.lexists(folder):
        raise OVQuantError(f"{folder}: exists and is not a folder")
    anc = folder
    while not os.path.lexists(anc):
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        raise OVQuantError(f"{anc}: exists and is not a folder (the output folder {folder} cannot be created)")
    try:
        ro = bool(os.statvfs(anc).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        ro = False
    kw = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if ro or not os.access(anc, os.W_OK | os.X_OK, **kw):
        why = "read-only file system" if ro else "permission denied"
        raise OVQuantError(f"{folder}: cannot create the output folder: {why} (in {anc})")
    return folder


def _strict_json(obj):
    """``obj`` with non-finite floats as the strings "nan", "inf", "-inf" (the report is strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if obj != obj else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        return _strict_json(obj.item())
    return obj


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


@contextlib.contextmanager
def _signals_held():
    """Defer SIGINT/SIGTERM/SIGHUP while the journal is replayed: Python-level handlers record the signal and
    it is raised again afterwards (only the main thread can set handlers; elsewhere nothing is deferred)."""
    pending, saved = [], {}
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            old = signal.getsignal(signum)
            if old in (signal.SIG_IGN, None):
                continue
            signal.signal(signum, lambda n, f: pending.append(n))
            saved[signum] = old
        except (ValueError, OSError):
            pass
    try:
        yield pending
    finally:
        for signum, old in saved.items():
            signal.signal(signum, old)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _commit(folder: str, dfd, token: str, staged: dict, finals: dict, pending: list, state: dict) -> None:
    """Journal the renames of the staged files, publish the journal (the commit point), rename, drop it."""
    renames = [(os.path.basename(staged[k].path), os.path.basename(finals[k])) for k in ("bin", "xml", "report")]
    body = json.dumps([list(r) for r in renames], sort_keys=True)
    journal = _Staged(folder, token, "journal")
    staged["journal"] = journal
    journal.write(json.dumps({"renames": json.loads(body),
                              "sha256": hashlib.sha256(body.encode()).hexdigest()}).encode())
    os.fsync(journal.fd)
    if pending:   # a signal came while the journal was written: do not commit
        raise KeyboardInterrupt
    journal.publish()   # the commit point: from here on the new output wins
    state["published"] = True
    _fsync_dir(dfd)
    for tmp, final in renames:
        os.rename(os.path.join(folder, tmp), os.path.join(folder, final))
    _fsync_dir(dfd)
    os.unlink(journal.path)
    journal.named = False
    state["committed"] = True
    _fsync_dir(dfd)


def save_outputs(model: ov.Model, output_dir: str, name: str, report: dict, overwrite: bool = False,
                 inputs: Iterable = ()) -> dict:
    """Write ``<name>.xml``, ``<name>.bin`` and ``<name>.report.json`` into ``output_dir``, atomically as a group.

    The three files are written and synced beside their final names, then renamed over them under the
    folder's lock through a journal (see the module docstring): a run killed or failing at any moment leaves
    the earlier files of these names whole (or, killed after the journal, a commit the next run completes);
    no other file of the folder is touched and the folder itself is kept. An existing file of these names is
    replaced only when ovquant wrote it (its report records it) and it is not one of ``inputs``, unless
    ``overwrite``. The report records the size and SHA-256 of the .xml and .bin under ``output_files``.
    """
    folder = _output_folder(output_dir, name)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OVQuantError(f"{folder}: exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OVQuantError(f"{folder}: cannot create the output folder: {exc.strerror}") from None
    finals = output_files(folder, name)
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    staged = {}
    state = {"published": False, "committed": False}
    try:
        for key, ext in (("xml", "xml"), ("bin", "bin"), ("report", "report.json")):
            staged[key] = _Staged(folder, token, ext)
        xml_path = staged["xml"].open_path()
        staged["bin"].open_path()
        ov.save_model(model, xml_path, compress_to_fp16=False)
        staged["xml"].unlink_path()
        staged["bin"].unlink_path()
        record = {os.path.basename(finals[k]): dict(zip(("bytes", "sha256"), _sha256_fd(staged[k].fd)))
                  for k in ("xml", "bin")}
        text = json.dumps(_strict_json({**report, RECORD_KEY: record}), indent=2, sort_keys=False, allow_nan=False)
        staged["report"].write((text + "\n").encode("utf-8"))
        for s in staged.values():
            os.fsync(s.fd)
        with _locked(folder) as dfd:
            recover(folder)
            modes = _check_targets(folder, name, inputs, overwrite)
            with _signals_held() as pending:   # from here a signal is handled after the commit, or stops it
                for key, mode in modes.items():
                    if mode is not None:
                        with contextlib.suppress(OSError):
                            os.fchmod(staged[key].fd, mode)
                for s in staged.values():
                    s.publish()
                _commit(folder, dfd, token, staged, finals, pending, state)
    except OVQuantError:
        raise
    except Exception as exc:   # disk full, permissions, ...: one line, and the earlier output stays
        raise OVQuantError(f"{folder}: cannot write the output: {_write_problem(exc, folder)}") from None
    finally:
        unfinished = state["published"] and not state["committed"]   # a journal on disk: complete it now
        for s in staged.values():
            s.close(remove=not unfinished and not state["committed"])
        if unfinished:
            with _locked(folder):
                recover(folder)
    return dict(finals)
