"""Calibration data: an iterable of samples, a folder of images, an .npy or an .npz file.

A sample is an array (models with one input), a tuple/list (one array per input, in order), or a dict
from input name to array. ``.npz`` keys are input names or ``input:<name>``; each array holds one
sample per row. A folder of images (class subfolders included) is read as :class:`ImageOptions` describes: BGR
0..255 as POT reads it, resized to the model input, unless mean, scale, channel order or layout say
otherwise.

Image folders live in :mod:`ovquant.image_folder`, the feed builder in :mod:`ovquant.feeds`; their
public names are re-exported here.
"""
import itertools
import os
import sys
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from .errors import DataError
from .feeds import FeedBuilder  # noqa: F401  (re-exported)
from .image_folder import (IMAGE_EXTENSIONS, ImageFolder, ImageOptions, parse_layout,  # noqa: F401
                           parse_values, preprocessing_warning)


class Dataset:
    """Calibration samples with an optional ``transform_fn``, in the style of ``nncf.Dataset``.

    ``data_source`` is any iterable of samples (or a path, see :func:`open_source`). ``transform_fn``
    turns one item into a model feed (array, tuple or dict).
    """

    def __init__(self, data_source: Any, transform_fn: Optional[Callable] = None):
        self.data_source = data_source
        self.transform_fn = transform_fn

    def __iter__(self) -> Iterator[Any]:
        for item in self.data_source:
            yield self.transform_fn(item) if self.transform_fn is not None else item

    def __len__(self) -> int:
        return len(self.data_source)


class _InferenceData:
    """An ``nncf.Dataset`` (or any object with its ``get_inference_data()``): each pass reads
    ``get_inference_data()`` again, the model feeds its transform made."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __iter__(self) -> Iterator[Any]:
        return iter(self.dataset.get_inference_data())


def _inner_source(source: Any) -> Any:
    """The source a Dataset-like object reads from (ovquant's ``data_source``, NNCF's ``_data_source``)."""
    if isinstance(source, Dataset):
        return source.data_source
    if isinstance(source, _InferenceData):
        source = source.dataset
    return getattr(source, "_data_source", None) if hasattr(source, "get_inference_data") else None


def one_shot(source: Any) -> bool:
    """Whether ``source`` can be read only once: an iterator (a generator, ``iter(list)``, a file object),
    or a Dataset over one."""
    if isinstance(source, Iterator):
        return True
    inner = _inner_source(source)
    return inner is not None and inner is not source and one_shot(inner)


#: the samples a run uses unless told otherwise (NNCF's ``subset_size`` and the CLI's default)
DEFAULT_SUBSET_SIZE = 300
#: a one-shot source keeps at most this many of its first samples for the passes after the first (all of
#: a default run's)...
REPLAY_SAMPLES = DEFAULT_SUBSET_SIZE
#: ... and at most this many bytes of them
REPLAY_BYTES = 2 << 30


class Replay:
    """A one-shot source read as a sequence: the first pass reads it, and its first samples (at most
    :data:`REPLAY_SAMPLES` and :data:`REPLAY_BYTES`) are kept for later passes, which read them again and
    go on reading the source where nothing was skipped. A pass that needs a sample that was read but not
    kept raises :class:`~ovquant.errors.DataError`; memory stays bounded whatever the number of samples."""

    def __init__(self, source: Any):
        self._source = iter(source)
        self.kept: list = []
        self.read = 0
        self.done = False
        self._bytes = 0

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while True:
            if i < len(self.kept):
                yield self.kept[i]
            elif i == self.read:
                if self.done:
                    return
                try:
                    item = next(self._source)
                except StopIteration:
                    self.done = True
                    return
                self.read += 1
                size = _nbytes(item)
                if len(self.kept) == i and len(self.kept) < REPLAY_SAMPLES and self._bytes + size <= REPLAY_BYTES:
                    self.kept.append(item)
                    self._bytes += size
                yield item
            else:
                raise DataError(
                    f"calibration data: a one-shot iterator (a generator) is read once; a later pass needs sample "
                    f"{i + 1} again and only the first {len(self.kept)} were kept: give a list, an array, a "
                    "Dataset over a list, or a file")
            i += 1


def _nbytes(item: Any) -> int:
    if isinstance(item, dict):
        return sum(_nbytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_nbytes(v) for v in item)
    return int(getattr(item, "nbytes", 0) or 0)


def replayable(source: Any) -> Any:
    """``source`` as every pass of a run may read it: a :class:`Replay` of a one-shot source, else itself."""
    if isinstance(source, Replay) or not one_shot(source):
        return source
    return Replay(open_source(source))


def _npz_member(z, info, path: str) -> np.ndarray:
    """One ``.npy`` member of an ``.npz``, its header checked against its size before anything is allocated."""
    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise DataError(f"{path}: array {key!r} holds Python objects (pickled); give numeric arrays")
        if len(shape) == 0:
            raise DataError(f"{path}: array {key!r} is a single value; each array holds one sample per row")
        claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if claimed > info.file_size:
            raise DataError(f"{path}: array {key!r} claims shape {list(shape)} but holds only "
                            f"{info.file_size} bytes (a truncated or corrupt file)")
        if fortran:
            data = np.frombuffer(f.read(claimed), dtype=dtype).reshape(shape[::-1]).T
        else:
            data = np.frombuffer(f.read(claimed), dtype=dtype).reshape(shape)
    return key, data


def _npz_rows(path: str) -> list:
    import zipfile

    arrays = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                key, arr = _npz_member(z, info, path)
                arrays[key] = arr
    except DataError:
        raise
    except Exception as exc:   # not a zip, bad CRC, bad header, ...
        line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        raise DataError(f"{path}: cannot read .npz: {line[:200]}") from None
    feeds = {}
    prefixed = any(k.startswith("input:") for k in arrays)
    for key, arr in arrays.items():
        if key.startswith("input:") or not prefixed:
            feeds[key[len("input:"):] if key.startswith("input:") else key] = arr
    if not feeds:
        raise DataError(f"{path}: no arrays in the .npz")
    n = {len(v) for v in feeds.values()}
    if len(n) != 1:
        raise DataError(f"{path}: arrays have different numbers of samples {sorted(n)}")
    return [{k: v[i] for k, v in feeds.items()} for i in range(n.pop())]


def open_source(source: Any, inputs: Optional[list] = None, image: Optional[ImageOptions] = None) -> Iterable:
    """Turn a path or an in-memory source into an iterable of samples. ``inputs`` are the model's
    input ports (an image folder is read for its single input); ``image`` says how images are read."""
    if isinstance(source, (Dataset, Replay, _InferenceData)):
        return source
    if callable(getattr(source, "get_inference_data", None)):
        return _InferenceData(source)   # an nncf.Dataset: its transform applied, as NNCF feeds the model
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            ports = [p for p in (inputs or []) if not isinstance(p, (tuple, list, type(None)))]
            folder = ImageFolder(path, ports[0] if len(ports) == 1 and len(inputs) == 1 else None, image)
            if not folder.files:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder "
                                "or its subfolders")
            folder.plan()
            return folder
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: a single image; give the folder that holds the calibration images")
        if path.endswith(".npz"):
            return _npz_rows(path)
        if path.endswith(".npy"):
            try:
                with open(path, "rb") as f:
                    magic = f.read(6)
                arr = np.load(path, allow_pickle=False, mmap_mode="r") if magic == b"\x93NUMPY" else None
            except OSError as exc:
                raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
            except Exception as exc:
                line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
                raise DataError(f"{path}: cannot read .npy: {line[:200]}") from None
            if arr is None:
                raise DataError(f"{path}: not an .npy file (no NumPy header; write it with numpy.save)")
            if arr.ndim == 0:
                raise DataError(f"{path}: holds a single value; an .npy holds one sample per row")
            return arr
        raise DataError(f"{path}: unsupported data file type (use a folder of images, .npy or .npz)")
    if isinstance(source, np.ndarray):
        if source.ndim == 0:
            raise DataError("calibration data is a single value; an array holds one sample per row")
        return source  # one sample per row
    if isinstance(source, (str, bytes, dict)):
        raise DataError(f"calibration data of type {type(source).__name__} is not supported "
                        "(give an iterable of samples, a folder of images, an .npy or an .npz file)")
    if isinstance(source, Iterable):
        return source
    raise DataError(f"calibration data of type {type(source).__name__} is not supported "
                    "(give an iterable of samples, a folder of images, an .npy or an .npz file)")


def held_back(samples: Iterable, used: Optional[set], n_used: Optional[int], n: int) -> tuple:
    """Up to ``n`` samples that statistics did not see: those after the first ``n_used`` (or outside the
    ``used`` indices) of a source that can be indexed. ``(samples, True)``, or ``(first n, False)`` when
    the source holds no others or cannot be read twice."""
    if hasattr(samples, "__len__") and hasattr(samples, "__getitem__") and not isinstance(samples, dict):
        total = len(samples)
        if used is None:
            used = set(range(min(total, n_used if n_used is not None else total)))
        rest = [i for i in range(total) if i not in used][:n]
        if rest:
            return [samples[i] for i in rest], True
        return [samples[i] for i in range(min(n, total))], False
    return list(take(samples, n)), False


def take(samples: Iterable, n: Optional[int]) -> Iterator:
    return iter(samples) if n is None else itertools.islice(samples, min(n, sys.maxsize))


def warn_short(n_seen: int, wanted: Optional[int]) -> None:
    if wanted is not None and n_seen < wanted:
        warnings.warn(f"stat_subset_size is {wanted} but the data has only {n_seen} samples; using {n_seen}",
                      stacklevel=3)
