"""Writing outputs atomically, file by file.

Output protocol (``save_outputs``): the ``.xml``, ``.bin`` and ``.report.json`` of a run (and, when asked
for, the ``.report.html``) are written as unnamed files inside the output folder (Linux ``O_TMPFILE``;
elsewhere named temporaries), synced, then, under an advisory lock on the folder, linked to temporary
names, listed in a small journal, renamed over the final names one by one and the journal removed. A run
killed before the journal exists leaves at most dangling links (no model copy); one killed after it leaves
a journal that the next run completes. Only files named ``.ovquant-tmp-<pid>-<random>.<ext>`` are ever
cleaned up, and only when no live process holds them. The folder itself (inode, owner, group, mode) is
never replaced.

The steps live in :mod:`ovquant.staging` (staged files, locks), :mod:`ovquant.journal` (commit journal,
recovery) and :mod:`ovquant.output_targets` (what may be replaced); their public names are re-exported here.
"""
import contextlib
import json
import math
import os
import secrets
from typing import Iterable, Optional

import openvino as ov

from .errors import OVQuantError
from .journal import _commit, _signals_held, recover  # noqa: F401  (recover: re-exported)
from .output_targets import (RECORD_KEY, _check_targets, _ours, _output_folder, check_output,  # noqa: F401
                             output_files)
from .staging import TMP_PREFIX, _Staged, _locked, _sha256_fd, _write_problem  # noqa: F401

#: the extension of each output's temporary file
_EXT = {"xml": "xml", "bin": "bin", "report": "report.json", "html": "report.html"}


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


def save_outputs(model: ov.Model, output_dir: str, name: str, report: dict, overwrite: bool = False,
                 inputs: Iterable = (), html: Optional[str] = None) -> dict:
    """Write ``<name>.xml``, ``<name>.bin`` and ``<name>.report.json`` (and the page ``html`` as
    ``<name>.report.html`` when given) into ``output_dir``, atomically as a group.

    The three files are written and synced beside their final names, then renamed over them under the
    folder's lock through a journal (see the module docstring): a run killed or failing at any moment leaves
    the earlier files of these names whole (or, killed after the journal, a commit the next run completes);
    no other file of the folder is touched and the folder itself is kept. An existing file of these names is
    replaced only when ovquant wrote it (its report records it) and it is not one of ``inputs``, unless
    ``overwrite``. The report records the size and SHA-256 of the .xml, .bin (and .html) under ``output_files``.
    Without ``html``, an earlier ``<name>.report.html`` that ovquant wrote (unchanged since) is removed after
    the commit: it described the model this run replaced.
    """
    folder = _output_folder(output_dir, name)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OVQuantError(f"{folder}: exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OVQuantError(f"{folder}: cannot create the output folder: {exc.strerror}") from None
    finals = output_files(folder, name, html is not None)
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    staged = {}
    state = {"published": False, "committed": False}
    try:
        for key in finals:
            staged[key] = _Staged(folder, token, _EXT[key])
        xml_path = staged["xml"].open_path()
        staged["bin"].open_path()
        ov.save_model(model, xml_path, compress_to_fp16=False)
        staged["xml"].unlink_path()
        staged["bin"].unlink_path()
        if html is not None:
            staged["html"].write(html.encode("utf-8"))
        record = {os.path.basename(finals[k]): dict(zip(("bytes", "sha256"), _sha256_fd(staged[k].fd)))
                  for k in finals if k != "report"}
        text = json.dumps(_strict_json({**report, RECORD_KEY: record}), indent=2, sort_keys=False, allow_nan=False)
        staged["report"].write((text + "\n").encode("utf-8"))
        for s in staged.values():
            os.fsync(s.fd)
        with _locked(folder) as dfd:
            recover(folder)
            modes = _check_targets(folder, name, inputs, overwrite, html is not None)
            # the page of an earlier run, unchanged since ovquant wrote it, would describe another model
            stale = html is None and "html" in _ours(folder, name, html=True)
            with _signals_held() as pending:   # from here a signal is handled after the commit, or stops it
                for key, mode in modes.items():
                    if mode is not None:
                        with contextlib.suppress(OSError):
                            os.fchmod(staged[key].fd, mode)
                _commit(folder, dfd, token, staged, finals, pending, state)
                if stale:
                    with contextlib.suppress(OSError):
                        os.unlink(output_files(folder, name, True)["html"])
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
