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

This module holds the cache's location, size cap and listing; the keys are in :mod:`ovquant.cache_keys`,
the entry files in :mod:`ovquant.cache_entries` (their public names are re-exported here).
"""
import contextlib
import os
import re
import tempfile
import threading
import time
from typing import Iterable, Optional

import openvino as ov

from .cache_entries import ENTRY_SUFFIX, Store, _Writer, _read_entry, _warn_once  # noqa: F401  (re-exported)
from .cache_keys import data_key, model_key  # noqa: F401  (re-exported)

DEFAULT_MAX_SIZE = 2 << 30
MAX_SIZE_ENV = "OVQUANT_CACHE_MAX_SIZE"
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
_DATA_RE = re.compile(r"^[0-9a-f]{32}-[a-z]{1,8}$")
_ENTRY_RE = re.compile(r"^[0-9a-f]{32}(\.stats|\.npy)$")       # .npy: the entries of earlier versions
_TEMP_RE = re.compile(r"^\.(rows|stats|npy)-[A-Za-z0-9_]{6,}$")   # a writer's temporaries (tempfile names)


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
