"""Calibration images: a folder of image files (class subfolders included) read as :class:`ImageOptions`
describes (BGR 0..255 as POT reads it, resized to the model input, unless mean, scale, channel order or
layout say otherwise), and the check for a model's own preprocessing."""
import os
import warnings
from typing import Any, Optional

import attrs
import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

@attrs.define(kw_only=True, frozen=True)
class ImageOptions:
    """How a folder of images becomes model input, named as in OpenVINO's model conversion.

    Each image is read with Pillow, converted to the model's channel count, resized to the input's
    height and width (bilinear), put in the channel order ``BGR`` (as POT reads images with OpenCV)
    or ``RGB`` with ``reverse_input_channels``, then fed as ``(pixel - mean_values) / scale_values``
    in the input's layout.
    """

    layout: Optional[str] = None
    mean_values: Optional[tuple] = None
    scale_values: Optional[tuple] = None
    reverse_input_channels: bool = False

    @property
    def plain(self) -> bool:
        return self.mean_values is None and self.scale_values is None

    def describe(self) -> str:
        order = "RGB" if self.reverse_input_channels else "BGR"
        return (f"{order}, layout {self.layout or 'auto'}, mean {list(self.mean_values or [0])}, "
                f"scale {list(self.scale_values or [1])}")


def parse_layout(text: Optional[str], what: str = "layout") -> Optional[str]:
    """``NCHW``, ``nhwc``, ``[N,C,H,W]`` -> the upper-case letters; anything else is a DataError."""
    if text is None:
        return None
    letters = "".join(ch for ch in str(text).upper() if ch.isalpha())
    if letters not in ("NCHW", "NHWC", "CHW", "HWC"):
        raise DataError(f"{what}: {str(text)[:40]!r} is not an image layout (NCHW, NHWC, CHW or HWC)")
    return letters


def parse_values(value: Any, what: str) -> Optional[tuple]:
    """One number, a list, or a comma-separated string (``"123.7,116.3,103.5"``) -> a tuple of floats."""
    if value is None:
        return None
    items = value.strip("[]() ").split(",") if isinstance(value, str) else (
        list(value) if isinstance(value, (list, tuple)) else [value])
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise DataError(f"{what}: expected a number or a list of numbers, got {str(value)[:40]!r}") from None
    if not out or not all(np.isfinite(out)):
        raise DataError(f"{what}: expected finite numbers, got {str(value)[:40]!r}")
    return out


def _image_files(root: str) -> list:
    """Image files under ``root`` (class subfolders included), as sorted paths relative to it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        out.extend(os.path.normpath(os.path.join(rel, f)) for f in filenames
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return sorted(out)


class ImageFolder:
    """The images of a folder and its subfolders, sorted by path, read as :class:`ImageOptions` says
    for ``model_input`` (an ``openvino`` input port; its rank, layout, channels and type decide)."""

    def __init__(self, path: str, model_input=None, options: Optional[ImageOptions] = None, files=None):
        self.path = path
        self.options = options or ImageOptions()
        self.files = _image_files(path) if files is None else list(files)
        self.input = model_input
        self._plan = None
        self.warnings: list = []

    @property
    def shape(self):
        if self.input is None:
            return None
        ps = self.input.get_partial_shape()
        return tuple(d.get_length() if d.is_static else -1 for d in ps) if ps.rank.is_static else None

    def describe(self) -> str:
        """What the samples depend on besides the files' bytes (for cache keys and reports)."""
        return f"{self.shape}|{self.options.describe()}"

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ImageFolder(self.path, self.input, self.options, self.files[i])
        return self._read(self.files[i])

    def __iter__(self):
        for f in self.files:
            yield self._read(f)

    def plan(self) -> dict:
        """Layout, channels, size and dtype of the input, or a DataError naming what does not fit."""
        if self._plan is None:
            self._plan = _image_plan(self.path, self.input, self.options)
        return self._plan

    def _read(self, rel: str) -> np.ndarray:
        from PIL import Image

        pl = self.plan()
        p = os.path.join(self.path, rel)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with Image.open(p) as im:
                    im = im.convert(pl["mode"])
                    if pl["h"] > 0 and pl["w"] > 0:
                        im = im.resize((pl["w"], pl["h"]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32)
            except Exception as exc:
                line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
                raise DataError(f"{p}: cannot read image: {line[:200]}") from None
        self.warnings.extend(f"{p}: {w.message}" for w in caught)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        if pl["c"] >= 3 and not self.options.reverse_input_channels:
            a = a[..., [2, 1, 0] + list(range(3, pl["c"]))]      # RGB(A) -> BGR(A), as OpenCV reads
        o = self.options
        if o.mean_values is not None:
            a = a - np.asarray(o.mean_values, np.float32)
        if o.scale_values is not None:
            a = a / np.asarray(o.scale_values, np.float32)
        if pl["layout"].endswith("CHW"):
            a = a.transpose(2, 0, 1)
        if pl["layout"].startswith("N"):
            a = a[None]
        return np.ascontiguousarray(a.astype(pl["dtype"], copy=False))


def _image_plan(path: str, inp, o: ImageOptions) -> dict:
    if inp is None:
        raise DataError(f"{path}: an image folder needs a model with exactly one input")
    ps = inp.get_partial_shape()
    name = inp.get_any_name() if inp.get_names() else inp.get_node().get_friendly_name()
    rank = ps.rank.get_length() if ps.rank.is_static else None
    if rank not in (3, 4):
        raise DataError(f"{path}: an image folder needs a 3-D or 4-D image input, model input {name!r} is {ps}")
    layout = o.layout or _model_layout(inp, rank)
    if len(layout) != rank:
        raise DataError(f"{path}: layout {layout} does not fit model input {name!r} of rank {rank} ({ps})")
    dims = dict(zip(layout, ps))
    if dims["C"].is_dynamic:
        raise DataError(f"{path}: model input {name!r} ({ps}) has no static channel count; give its layout")
    c = dims["C"].get_length()
    if c not in (1, 3, 4):
        raise DataError(f"{path}: model input {name!r} ({ps}, layout {layout}) has {c} channels; "
                        "an image folder feeds 1 (gray), 3 (color) or 4 (with alpha)")
    for v, what in ((o.mean_values, "mean_values"), (o.scale_values, "scale_values")):
        if v is not None and len(v) not in (1, c):
            raise DataError(f"{what}: {len(v)} values for an input with {c} channels")
    if o.scale_values is not None and any(v == 0 for v in o.scale_values):
        raise DataError("scale_values: must not be 0")
    dtype = inp.get_element_type().to_dtype()
    if np.issubdtype(dtype, np.integer) and not o.plain:
        raise DataError(f"{path}: model input {name!r} is {dtype}; mean_values/scale_values need a float input")
    if not (np.issubdtype(dtype, np.floating) or dtype == np.uint8):
        raise DataError(f"{path}: model input {name!r} is {dtype}; an image folder feeds float or u8 input")
    size = [dims[k].get_length() if dims[k].is_static else -1 for k in ("H", "W")]
    return {"layout": layout, "c": c, "h": size[0], "w": size[1], "dtype": dtype,
            "mode": {1: "L", 3: "RGB", 4: "RGBA"}[c]}


def _model_layout(inp, rank: int) -> str:
    """The input's layout from its runtime info (set by convert_model's ``layout``), else for a 4-D
    input NCHW when axis 1 has 1, 3 or 4 channels and the last axis does not, else NHWC."""
    try:
        import openvino as ov

        lay = ov.layout_helpers.get_layout(inp)
        text = parse_layout(lay.to_string()) if not lay.empty else None
        if text and len(text) == rank:
            return text
    except Exception:
        pass
    ps = inp.get_partial_shape()
    if rank == 3:
        raise DataError(f"model input {inp.get_any_name() if inp.get_names() else inp.get_node().get_friendly_name()!r} "
                        f"is 3-D ({ps}): give its image layout (--layout CHW or HWC; engine.layout in a config)")
    first, last = ps[rank - 3], ps[rank - 1]
    small = lambda d: d.is_static and d.get_length() in (1, 3, 4)
    chw = small(first) and not small(last)
    return ("N" if rank == 4 else "") + ("CHW" if chw else "HWC")


#: ops that scale or shift an input on its way to the first layer (the model's own preprocessing)
_PREPROCESSING_OPS = {"Multiply", "Divide", "Subtract", "Add", "Convert", "FakeQuantize", "Clamp", "MVN",
                      "NormalizeL2", "BatchNormInference", "ScaleShift"}


def preprocessing_warning(folder: "ImageFolder") -> Optional[str]:
    """A warning when images are fed as plain 0..255 pixels to a model whose input goes straight into a
    Convolution or MatMul (no scaling of its own): such a model was most likely trained on normalized
    input, and calibrating it on raw pixels gives ranges far outside what it sees in use."""
    if not folder.options.plain or folder.input is None:
        return None
    node = folder.input.get_node()
    frontier, seen = [node], set()
    while frontier:
        n = frontier.pop()
        for out in n.outputs():
            for t in out.get_target_inputs():
                c = t.get_node()
                kind = c.get_type_name()
                if kind in _PREPROCESSING_OPS:
                    return None
                if kind in ("Convolution", "GroupConvolution", "MatMul"):
                    return (f"{folder.path}: images are fed as 0..255 pixels ({folder.options.describe()}) and the "
                            f"model has no scaling before its first layer {c.get_friendly_name()!r}; if it was "
                            "trained on normalized input, give --mean-values/--scale-values (engine.mean_values/"
                            "scale_values in a config)")
                if c.get_friendly_name() not in seen and kind not in ("Result",):
                    seen.add(c.get_friendly_name())
                    frontier.append(c)
    return None
