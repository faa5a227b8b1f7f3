"""What an output folder may receive: the checks before anything is written (see :mod:`ovquant.output`).

An existing output file is replaced only when ovquant wrote it (the ``<name>.report.json`` beside it
records its size and SHA-256), it is not an input of the run, and the folder lets this user replace it.
"""
import json
import os
import stat
from typing import Iterable, Optional

from .config import output_name_problem
from .errors import OVQuantError
from .journal import recover
from .staging import _locked, _probe, _sha256_file

#: the report key that records the files a run wrote (how ovquant recognises its own earlier output)
RECORD_KEY = "output_files"
_MAX_REPORT_BYTES = 64 << 20


def output_files(output_dir: str, name: str, html: bool = False) -> dict:
    """The paths a run writes: ``{"xml": ..., "bin": ..., "report": ...}`` (and ``"html"`` with ``html``)."""
    files = (("xml", ".xml"), ("bin", ".bin"), ("report", ".report.json")) + ((("html", ".report.html"),) if html else ())
    return {k: os.path.join(output_dir, f"{name}{ext}") for k, ext in files}


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


def _ours(folder: str, name: str, html: bool = False) -> set:
    """The keys ("xml", "bin", "report", "html") of the existing output files that ovquant wrote, unchanged
    since (the report records each one's size and SHA-256)."""
    rec = _record(folder, name)
    if rec is None:
        return set()
    out = {"report"}
    for key, path in output_files(folder, name, html).items():
        want = rec.get(os.path.basename(path))
        if key == "report" or not isinstance(want, dict):
            continue
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


def _check_targets(folder: str, name: str, inputs: Iterable, overwrite: bool, html: bool = False) -> dict:
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
    for key, path in output_files(folder, name, html).items():
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
            ours = _ours(folder, name, html)
        if key not in ours:
            raise OVQuantError(f"{path}: exists and was not written by ovquant (or was changed since); refusing "
                               "to replace it (give another -o/--output-dir or -n/--name, or --overwrite)")
    return modes


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


def check_output(output_dir, name: str, inputs: Iterable = (), overwrite: bool = False, html: bool = False) -> str:
    """Before calibration: can ``<name>.xml``/``.bin``/``.report.json`` (and with ``html`` the
    ``.report.html``) be written into ``output_dir``
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
            _check_targets(folder, name, inputs, overwrite, html)
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
