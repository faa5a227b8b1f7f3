"""The statistics cache: per-sample estimator values, keyed by model, data and reduction.

A rerun that changes only aggregators, outlier settings of aggregators, or bias-correction settings
finds every per-sample value here and runs no inference; a rerun that needs new statistics collects
only the missing ones. Values are written to disk sample by sample as they are computed (memory does
not grow with the number of samples) and published atomically when the pass completes.

Layout: ``<root>/<model key>/<data key>-<variant>/<reduction key>.stats``. The model key is the SHA-256 of
the whole serialized model (IR .xml and .bin: If/Loop/TensorIterator bodies, attributes and constants
included), the data key hashes the samples' bytes (an image folder: every file's content). An entry is a
small JSON header (its key, shape and the SHA-256 of its rows) followed by the float32 rows; an entry whose
header, key or checksum does not match is a miss (one warning), never used.

Location: ``$OVQUANT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ovquant/statistics``, else
``~/.cache/ovquant/statistics``. Size: at most ``$OVQUANT_CACHE_MAX_SIZE`` (default 2G; K, M, G suffixes),
the least recently used entries are evicted first. A cache that cannot be created or written turns caching
off for the run with one warning. ``ovquant cache info`` / ``ovquant cache clear``.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from typing import Any, Iterable, Optional

import numpy as np
import openvino as ov

from .dataset import Dataset, ImageFolder

DEFAULT_MAX_SIZE = 2 << 30
MAX_SIZE_ENV = "OVQUANT_CACHE_MAX_SIZE"
ENTRY_SUFFIX = ".stats"
_MAGIC = b"OVQSTAT1"
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
_DATA_RE = re.compile(r"^[0-9a-f]{32}-[a-z]{1,8}$")
_ENTRY_RE = re.compile(r"^[0-9a-f]{32}(\.stats|\.npy)$")       # .npy: the entries of earlier versions
_TEMP_RE = re.compile(r"^\.(rows|stats|npy)-[A-Za-z0-9_]{6,}$")   # a writer's temporaries (tempfile names)
_warned = set()
_warn_lock = threading.Lock()


def _warn_once(topic: str, msg: str) -> None:
    """One warning per topic and process (a broken cache is said once, not per entry)."""
    with _warn_lock:
        if topic in _warned:
            return
        _warned.add(topic)
    warnings.warn(msg, stacklevel=3)


def default_root(warn: bool = True) -> Optional[str]:
    """The cache folder (absolute), or None when there is no home folder to put it in (one warning)."""
    env = os.environ.get("OVQUANT_CACHE_DIR")
    if env:
        return os.path.abspath(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "ovquant", "statistics")
    home = os.environ.get("HOME") if os.name == "posix" else os.path.expanduser("~")
    if not home or not os.path.isabs(home):
        if warn:
            _warn_once("root", "statistics cache is off: no home folder (HOME is not set); set OVQUANT_CACHE_DIR")
        return None
    return os.path.join(home, ".cache", "ovquant", "statistics")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def max_size() -> int:
    """The cache's size cap in bytes (``$OVQUANT_CACHE_MAX_SIZE``, default 2 GiB)."""
    raw = os.environ.get(MAX_SIZE_ENV)
    if not raw:
        return DEFAULT_MAX_SIZE
    try:
        return parse_size(raw)
    except ValueError:
        _warn_once("size", f"{MAX_SIZE_ENV}={raw!r} is not a size (like 500M or 2G); using the default 2G")
        return DEFAULT_MAX_SIZE


def format_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _hasher():
    """SHA-256: the keys only need to tell inputs apart (no adversary), and with the CPU's SHA
    instructions it hashes calibration data 1.6x as fast as BLAKE2b (1.4 vs 0.9 GB/s here)."""
    return hashlib.sha256()


def _hash_serialized(model: ov.Model, h) -> None:
    """Feed ``h`` the model's IR: serialized into unnamed files where Linux allows, else a temporary folder."""
    if hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"):
        fds = []
        links = tempfile.mkdtemp(prefix="ovquant-key-")
        try:
            for ext in ("xml", "bin"):
                fds.append(os.memfd_create(f"ovquant-key.{ext}"))
                os.symlink(f"/proc/{os.getpid()}/fd/{fds[-1]}", os.path.join(links, f"m.{ext}"))
            ov.save_model(model, os.path.join(links, "m.xml"), compress_to_fp16=False)
            for fd in fds:
                off = 0
                h.update(f"|{os.fstat(fd).st_size}|".encode())
                while True:
                    chunk = os.pread(fd, 1 << 22, off)
                    if not chunk:
                        break
                    h.update(chunk)
                    off += len(chunk)
            return
        finally:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(links, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="ovquant-key-") as d:
        ov.save_model(model, os.path.join(d, "m.xml"), compress_to_fp16=False)
        for ext in ("xml", "bin"):
            with open(os.path.join(d, f"m.{ext}"), "rb") as f:
                h.update(f"|{os.fstat(f.fileno()).st_size}|".encode())
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)


def model_key(model: ov.Model) -> str:
    """A digest of the whole serialized model: ops, connections, attributes, constants, names, and the
    bodies of If, Loop and TensorIterator (which a walk of the top-level ops does not see)."""
    h = _hasher()
    _hash_serialized(model, h)
    return h.hexdigest()[:32]


def _update_sample(h, s: Any) -> None:
    if isinstance(s, dict):
        for k in sorted(s, key=str):
            h.update(f"[{k}]".encode())
            _update_sample(h, s[k])
    elif isinstance(s, (list, tuple)):
        for x in s:
            _update_sample(h, x)
    else:
        a = np.ascontiguousarray(s)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))   # no copy


def _simple(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or \
        isinstance(v, (tuple, list)) and all(_simple(x) for x in v)


def data_key(samples: Iterable, subset_size: Optional[int]) -> Optional[str]:
    """A digest of the first ``subset_size`` samples, or None when the source can be read only once.
    An image folder is keyed by the bytes of its files (and how they are read), not by names or dates."""
    h = _hasher()
    h.update(f"n={subset_size}".encode())
    if isinstance(samples, ImageFolder):
        files = samples.files if subset_size is None else samples.files[:subset_size]
        if hasattr(samples, "describe"):
            how = samples.describe()   # what the samples depend on besides the files' bytes
        else:
            how = repr(sorted((k, v) for k, v in vars(samples).items() if k not in ("files", "path") and _simple(v)))
        h.update(f"images|{type(samples).__qualname__}|{how}".encode())
        for f in files:
            h.update(f"|{f}|".encode())
            with open(os.path.join(samples.path, f), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                h.update(f"{size}|".encode())
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        return h.hexdigest()[:32]
    base = samples.data_source if isinstance(samples, Dataset) else samples
    if not isinstance(base, (list, tuple, np.ndarray)):
        return None   # a generator or stream: reading it to hash it would consume it
    if isinstance(samples, Dataset) and samples.transform_fn is not None:
        fn = samples.transform_fn
        h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}".encode())
    for i, s in enumerate(samples):
        if subset_size is not None and i >= subset_size:
            break
        _update_sample(h, s)
    return h.hexdigest()[:32]


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
        if self.f is not None:
            with contextlib.suppress(OSError):
                self.f.close()
            self.f = None
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)

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
        self.cache = cache or StatisticsCache(os.path.dirname(os.path.dirname(path)))

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


def _entries(root: str):
    """(path, size, mtime) of every cache entry and writer temporary under ``root`` (by the layout's names
    only: nothing else in the folder is ever listed, so nothing else is ever removed)."""
    try:
        models = [m for m in os.listdir(root) if _KEY_RE.match(m)]
    except OSError:
        return
    for m in models:
        mp = os.path.join(root, m)
        try:
            datas = [d for d in os.listdir(mp) if _DATA_RE.match(d)] if os.path.isdir(mp) else []
        except OSError:
            continue
        for d in datas:
            dp = os.path.join(mp, d)
            try:
                names = os.listdir(dp) if os.path.isdir(dp) and not os.path.islink(dp) else []
            except OSError:
                continue
            for n in names:
                if _ENTRY_RE.match(n) or _TEMP_RE.match(n):
                    p = os.path.join(dp, n)
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    if os.path.isfile(p) and not os.path.islink(p):
                        yield p, st.st_size, st.st_mtime


def _prune_empty(root: str) -> None:
    try:
        models = [m for m in os.listdir(root) if _KEY_RE.match(m)]
    except OSError:
        return
    for m in models:
        mp = os.path.join(root, m)
        with contextlib.suppress(OSError):
            for d in os.listdir(mp):
                if _DATA_RE.match(d):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(mp, d))
            os.rmdir(mp)


def info(root: Optional[str] = None) -> dict:
    """Where the cache is, how many entries it holds, their total size and the size cap."""
    root = root or default_root(warn=False)
    found = list(_entries(root)) if root else []
    return {"root": root, "entries": sum(1 for p, _, _ in found if p.endswith((ENTRY_SUFFIX, ".npy"))),
            "bytes": sum(s for _, s, _ in found), "limit": max_size()}


def clear(root: Optional[str] = None) -> tuple:
    """Remove every cache entry under ``root`` (default: the cache's location); returns (entries, bytes).
    Only files named as the cache names them are removed, then the folders they leave empty."""
    root = root or default_root(warn=False)
    n = size = 0
    if not root:
        return n, size
    for p, s, _ in list(_entries(root)):
        try:
            os.unlink(p)
        except OSError:
            continue
        n += p.endswith((ENTRY_SUFFIX, ".npy"))
        size += s
    _prune_empty(root)
    return n, size


def evict(root: str, limit: int, keep: Iterable[str] = ()) -> int:
    """Remove the least recently used entries until the cache is at most ``limit`` bytes; returns bytes freed."""
    found = sorted(_entries(root), key=lambda e: e[2])
    total = sum(s for _, s, _ in found)
    keep = set(keep)
    freed = 0
    young = time.time() - 3600
    for p, s, t in found:
        if total - freed <= limit:
            break
        if p in keep or not p.endswith((ENTRY_SUFFIX, ".npy")) and t > young:   # a live writer's temporary
            continue
        with contextlib.suppress(OSError):
            os.unlink(p)
            freed += s
    if freed:
        _prune_empty(root)
    return freed


class StatisticsCache:
    """The cache at ``root``. Creation or write failures turn it off with one warning; the run goes on."""

    def __init__(self, root: Optional[str] = None, limit: Optional[int] = None):
        self.root = root or default_root()
        self.limit = max_size() if limit is None else limit
        self.disabled = self.root is None
        self._total = None
        self._lock = threading.Lock()

    def failed(self, exc: OSError) -> None:
        self.disabled = True
        why = getattr(exc, "strerror", None) or str(exc)
        _warn_once(f"write:{self.root}", f"statistics cache {self.root}: cannot be written ({why}); caching is "
                                         "off for this run")

    def added(self, nbytes: int) -> None:
        with self._lock:
            if self._total is None:
                return
            self._total += nbytes
            over = self._total > self.limit
        if over:
            self._total -= evict(self.root, self.limit)

    def _usable(self) -> bool:
        if self.disabled:
            return False
        try:
            os.makedirs(self.root, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".stats-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            if isinstance(exc, FileExistsError) or os.path.exists(self.root) and not os.path.isdir(self.root):
                exc = OSError(exc.errno, "exists and is not a folder")
            self.failed(exc)
            return False
        return True

    def open(self, model: ov.Model, samples: Iterable, subset_size: Optional[int], variant: str) -> Optional[Store]:
        if not self._usable():
            return None
        dk = data_key(samples, subset_size)
        if dk is None:
            return None
        if self._total is None:
            found = list(_entries(self.root))
            self._total = sum(s for _, s, _ in found)
            if self._total > self.limit:
                self._total -= evict(self.root, self.limit)
        return Store(os.path.join(self.root, model_key(model), f"{dk}-{variant}"), self)
