"""The statistics cache's entries (see :mod:`ovquant.cache`): one file per reduction, a small JSON header
(its key, shape and the SHA-256 of its rows) followed by the float32 rows, written block by block into a
temporary and published atomically; read back only when its header, key and checksum match."""
import contextlib
import hashlib
import json
import os
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING, Optional

import numpy as np

from .cache_keys import _hasher

if TYPE_CHECKING:
    from .cache import StatisticsCache

ENTRY_SUFFIX = ".stats"
_MAGIC = b"OVQSTAT1"
_warned = set()
_warn_lock = threading.Lock()


def _warn_once(topic: str, msg: str) -> None:
    """One warning per topic and process (a broken cache is said once, not per entry)."""
    with _warn_lock:
        if topic in _warned:
            return
        _warned.add(topic)
    warnings.warn(msg, stacklevel=3)


def _header(key_repr: str, shape: tuple, n: int, digest: str, size: int) -> bytes:
    """The entry header: magic, then JSON padded with spaces to ``size`` bytes, ending in a newline."""
    body = json.dumps({"key": key_repr, "dtype": "<f4", "shape": [n, *shape], "sha256": digest}).encode()
    if len(_MAGIC) + len(body) + 1 > size:
        raise ValueError("header too long")
    return _MAGIC + body + b" " * (size - len(_MAGIC) - len(body) - 1) + b"\n"


class _Writer:
    """Appends one row per sample to a temporary file; ``commit`` publishes it as an entry. A write that
    fails (full disk, ...) turns this entry off with one warning: the run goes on without it."""

    def __init__(self, path: str, key_repr: str, cache: "StatisticsCache"):
        self.path, self.key_repr, self.cache = path, key_repr, cache
        self.shape = None
        self.n = 0
        self.h = _hasher()
        self.f = None
        # room for the header: the key and up to 8 dimensions of 20 digits each
        self.header_size = -(-(len(_MAGIC) + len(json.dumps(key_repr)) + 300) // 64) * 64
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".stats-", dir=os.path.dirname(path))
            self.f = os.fdopen(fd, "wb")
            self.f.write(b"\0" * self.header_size)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.cache.failed(exc)
        self.abort()

    def write(self, row: np.ndarray) -> None:
        self.write_rows(np.ascontiguousarray(row, np.float32)[None])

    def write_rows(self, rows: np.ndarray) -> None:
        if self.f is None:
            return
        rows = np.ascontiguousarray(rows, np.float32)
        if self.shape is None:
            self.shape = rows.shape[1:]
        data = memoryview(rows).cast("B")
        try:
            self.f.write(data)
        except OSError as exc:
            self._fail(exc)
            return
        self.h.update(data)
        self.n += len(rows)

    def commit(self) -> None:
        if self.f is None:
            return
        try:
            self.f.seek(0)
            self.f.write(_header(self.key_repr, tuple(int(d) for d in self.shape or ()), self.n, self.h.hexdigest(),
                                 self.header_size))
            self.f.close()
            self.f = None
            os.replace(self.tmp, self.path)
            self.cache.added(os.path.getsize(self.path))
        except (OSError, ValueError) as exc:
            self._fail(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def abort(self) -> None:
        """Drop the temporary (nothing is published)."""
        if self.f is not None:
            with contextlib.suppress(OSError):
                self.f.close()
            self.f = None
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


def _read_entry(path: str, key_repr: str) -> tuple:
    """(array, None) for a whole entry of this key, (None, why) for anything else."""
    f = open(path, "rb")
    try:
        head = f.read(1 << 16)
        if not head.startswith(_MAGIC) or b"\n" not in head:
            return None, "not an ovquant statistics entry"
        end = head.index(b"\n") + 1
        try:
            meta = json.loads(head[len(_MAGIC):end].decode("utf-8"))
            shape = tuple(int(d) for d in meta["shape"])
            digest, key, dtype = meta["sha256"], meta["key"], meta["dtype"]
        except (ValueError, KeyError, TypeError):
            return None, "a damaged header"
        if key != key_repr or dtype != "<f4":
            return None, "the entry of another key"
        size = 4 * int(np.prod(shape, dtype=np.int64))
        if os.fstat(f.fileno()).st_size != end + size:
            return None, f"{os.fstat(f.fileno()).st_size - end} bytes of data where the header says {size}"
        h = _hasher()
        f.seek(end)
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
        if h.hexdigest() != digest:
            return None, "its checksum does not match (edited or damaged)"
        if size == 0:
            return np.zeros(shape, np.float32), None
        return np.memmap(f, dtype="<f4", mode="r", offset=end, shape=shape), None
    finally:
        f.close()   # the memmap keeps its own reference to the file's mapping


class Store:
    """The cached per-sample values of one (model, data) pair."""

    def __init__(self, path: str, cache: Optional["StatisticsCache"] = None):
        self.path = path
        if cache is None:
            from .cache import StatisticsCache

            cache = StatisticsCache(os.path.dirname(os.path.dirname(path)))
        self.cache = cache

    @staticmethod
    def _name(key: tuple) -> str:
        return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest() + ENTRY_SUFFIX

    def get(self, key: tuple) -> Optional[np.ndarray]:
        """The entry of ``key``, or None: missing, or damaged, edited or foreign (a miss with one warning)."""
        if self.cache.disabled:
            return None
        p = os.path.join(self.path, self._name(key))
        try:
            arr, why = _read_entry(p, repr(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            arr, why = None, f"cannot be read ({exc.strerror})"
        if arr is None:
            _warn_once(f"entry:{self.cache.root}", f"statistics cache entry {p}: {why}; not used (statistics are "
                                                   "computed again)")
            return None
        with contextlib.suppress(OSError):
            os.utime(p)   # least recently used goes first when the cache is over its size
        return arr

    def writer(self, key: tuple) -> _Writer:
        if not self.cache.disabled:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                self.cache.failed(exc)
        return _Writer(os.path.join(self.path, self._name(key)), repr(key), self.cache)
