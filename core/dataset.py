"""Calibration data: an iterable of samples, a folder of images, an .npy or an .npz file.

A sample is an array (models with one input), a tuple/list (one array per input, in order), or a dict
from input name to array. ``.npz`` keys are input names or ``input:<name>``; each array holds one
sample per row. Images are read with Pillow, resized to the model input and fed as float32 0..255 in
the model's layout (NCHW when the channel dimension is 1 or 3 at axis 1, else NHWC), RGB order.
"""
import itertools
import os
import sys
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def _npz_rows(path: str) -> list:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read .npz: {exc}") from None
    feeds = {}
    for key in npz.files:
        name = key[len("input:"):] if key.startswith("input:") else key
        if key.startswith("input:") or not any(k.startswith("input:") for k in npz.files):
            feeds[name] = npz[key]
    if not feeds:
        raise DataError(f"{path}: no arrays in the .npz")
    n = {len(v) for v in feeds.values()}
    if len(n) != 1:
        raise DataError(f"{path}: arrays have different numbers of samples {sorted(n)}")
    return [{k: v[i] for k, v in feeds.items()} for i in range(n.pop())]


class ImageFolder:
    """The images of a folder, sorted by file name, resized to ``shape`` (the model's input shape)."""

    def __init__(self, path: str, shape=None):
        self.path = path
        self.files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        self.shape = shape

    def __len__(self):
        return len(self.files)

    def __iter__(self):
        from PIL import Image

        shape = self.shape
        if shape is None or len(shape) != 4:
            raise DataError(f"{self.path}: an image folder needs a model with one 4-D image input, got shape {shape}")
        nchw = shape[1] in (1, 3)
        c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
        for f in self.files:
            p = os.path.join(self.path, f)
            try:
                with Image.open(p) as im:
                    im = im.convert("L" if c == 1 else "RGB").resize((int(w), int(h)), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32)
            except Exception as exc:
                raise DataError(f"{p}: cannot read image: {exc}") from None
            a = a.reshape(h, w, c)
            yield (a.transpose(2, 0, 1) if nchw else a)[None]


def open_source(source: Any, input_shapes: Optional[list] = None) -> Iterable:
    """Turn a path or an in-memory source into an iterable of samples."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            folder = ImageFolder(path, input_shapes[0] if input_shapes and len(input_shapes) == 1 else None)
            if not folder.files:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
            return folder
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
        if path.endswith(".npz"):
            return _npz_rows(path)
        if path.endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise DataError(f"{path}: cannot read .npy: {exc}") from None
            if arr.ndim == 0:
                raise DataError(f"{path}: holds a single value; an .npy holds one sample per row")
            return arr
        raise DataError(f"{path}: unsupported data file type (use a folder of images, .npy or .npz)")
    if isinstance(source, np.ndarray):
        if source.ndim == 0:
            raise DataError("calibration data is a single value; an array holds one sample per row")
        return source  # one sample per row
    if isinstance(source, Iterable):
        return source
    raise DataError(f"calibration data of type {type(source).__name__} is not supported "
                    "(give an iterable of samples, a folder of images, an .npy or an .npz file)")


def take(samples: Iterable, n: Optional[int]) -> Iterator:
    return iter(samples) if n is None else itertools.islice(samples, min(n, sys.maxsize))


class FeedBuilder:
    """Turns samples into ``{input index: array}`` feeds that fit the model's inputs, or says why not."""

    def __init__(self, model_inputs):
        self.inputs = list(model_inputs)
        self.names = []
        for i, inp in enumerate(self.inputs):
            self.names.append(set(inp.get_names()) | {inp.get_node().get_friendly_name()})

    def _index(self, key) -> int:
        if isinstance(key, int) and 0 <= key < len(self.inputs):
            return key
        k = key[len("input:"):] if isinstance(key, str) and key.startswith("input:") else key
        for i, names in enumerate(self.names):
            if k in names:
                return i
        known = ", ".join(sorted(next(iter(sorted(n))) for n in self.names))
        raise DataError(f"sample key {key!r} names no model input (inputs: {known})")

    def __call__(self, sample: Any, index: int) -> dict:
        if isinstance(sample, dict):
            items = [(self._index(k), v) for k, v in sample.items()]
        elif isinstance(sample, (list, tuple)):
            items = list(enumerate(sample))
        else:
            items = [(0, sample)]
        if len(items) != len(self.inputs):
            raise DataError(f"sample {index}: the model has {len(self.inputs)} input(s), the sample gives {len(items)}")
        return {i: self._fit(i, v, index) for i, v in items}

    def _fit(self, i: int, value: Any, index: int) -> np.ndarray:
        inp = self.inputs[i]
        name = inp.get_any_name() if inp.get_names() else inp.get_node().get_friendly_name()
        a = np.asarray(value)
        want = inp.get_element_type().to_dtype()
        if a.dtype != want:
            if np.issubdtype(want, np.integer) and not np.issubdtype(a.dtype, np.integer):
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} does not fit the model's {want}")
            if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} is not numeric")
            if np.iscomplexobj(a):   # numpy would drop the imaginary part with a mere ComplexWarning
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} does not fit the model's {want}")
            a = a.astype(want)
        ps = inp.get_partial_shape()
        if ps.rank.is_static:
            rank = ps.rank.get_length()
            if a.ndim == rank - 1:
                a = a[None]
            ok = a.ndim == rank and all(d.is_dynamic or d.get_length() == s for d, s in zip(ps, a.shape))
            if not ok:
                raise DataError(f"sample {index}, input {name!r}: shape {list(a.shape)} does not fit the model's {ps}")
        return np.ascontiguousarray(a)


def warn_short(n_seen: int, wanted: Optional[int]) -> None:
    if wanted is not None and n_seen < wanted:
        warnings.warn(f"stat_subset_size is {wanted} but the data has only {n_seen} samples; using {n_seen}",
                      stacklevel=3)
