"""The journal of an output commit and the recovery of what killed runs left (see :mod:`ovquant.output`).

A commit lists its renames (temporary -> final name) in a checksummed journal; publishing the journal is
the commit point. :func:`recover` completes a dead run's valid journal and removes its other temporaries.
"""
import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import threading
from typing import Optional

from .staging import _TMP_RE, _Staged, _fsync_dir, fcntl

#: the final names a journal may rename to
FINAL_SUFFIXES = (".xml", ".bin", ".report.json", ".report.html")


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
                    and final.endswith(FINAL_SUFFIXES) and "/" not in final
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
    """Journal the renames of the staged files, name them, publish the journal (the commit point), rename,
    drop it."""
    keys = [k for k in ("bin", "xml", "html", "report") if k in finals]
    renames = [(os.path.basename(staged[k].path), os.path.basename(finals[k])) for k in keys]
    body = json.dumps([list(r) for r in renames], sort_keys=True)
    journal = _Staged(folder, token, "journal")
    staged["journal"] = journal
    journal.write(json.dumps({"renames": json.loads(body),
                              "sha256": hashlib.sha256(body.encode()).hexdigest()}).encode())
    os.fsync(journal.fd)
    if pending:   # a signal came while the journal was written: do not commit
        raise KeyboardInterrupt
    for k in keys:   # name the staged files only now: a kill between these links and the journal's leaves
        staged[k].publish()   # named temporaries for the next run to remove; the window is a few link calls
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
