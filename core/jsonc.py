"""Reading JSON files as POT does: comments (``//``, ``/* */``), trailing commas, NaN, and the encodings
JSON allows (UTF-8 with or without a BOM, UTF-16, UTF-32); a problem names the file in one line."""
import json
from typing import Any

import json5

from .errors import ConfigError
from .structure import _clip_text


def read_json(path: str) -> Any:
    """Read JSON with comments (and POT's other leniencies: trailing commas, NaN); a problem names the
    file. UTF-8 (with or without a BOM), UTF-16 and UTF-32 (with a BOM, or detected from the zero bytes
    as RFC 4627 does) are read."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    text = decode_text(raw, path)
    return parse_json_text(text, path)


def decode_text(raw: bytes, path: str) -> str:
    """The text of a JSON file's bytes: the encoding from a BOM, else from the pattern of zero bytes in
    the first four (JSON text starts with an ASCII character), else UTF-8."""
    boms = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8-sig"),
            (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
    enc = next((e for bom, e in boms if raw.startswith(bom)), None)
    skip = 0
    if enc is not None and enc != "utf-8-sig":
        skip = len(next(bom for bom, e in boms if e == enc))
    elif enc is None:
        head = raw[:4]
        if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] == 0:
            enc = "utf-32-be"
        elif len(head) == 4 and head[1] == 0 and head[2] == 0 and head[3] == 0:
            enc = "utf-32-le"
        elif len(head) >= 2 and head[0] == 0:
            enc = "utf-16-be"
        elif len(head) >= 2 and head[1] == 0:
            enc = "utf-16-le"
        else:
            enc = "utf-8"
    try:
        return raw[skip:].decode(enc)
    except UnicodeDecodeError as exc:
        name = {"utf-8-sig": "UTF-8"}.get(enc, enc.upper().replace("-BE", " BE").replace("-LE", " LE"))
        raise ConfigError(f"{path}: cannot read: not valid {name} text (byte {exc.start + skip}); "
                          "save the file as UTF-8") from None


def strip_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments blanked (newlines kept, so line numbers stay) and commas
    before a closing ``]`` or ``}`` removed; strings are left alone. One pass: linear in the text."""
    out = []
    i, n = 0, len(text)
    pending_comma = None          # index in ``out`` of a comma that a closing bracket would make trailing
    seg = 0                       # start of the run of ordinary characters not yet copied
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = min(j + 1, n)
            pending_comma = None
            continue
        if c == "/" and i + 1 < n and text[i + 1] in "/*":
            out.append(text[seg:i])
            if text[i + 1] == "/":
                j = text.find("\n", i)
                j = n if j < 0 else j
                out.append(" " * (j - i))
            else:
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
                out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = seg = j
            continue
        if c == ",":
            out.append(text[seg:i])
            pending_comma = len(out)
            out.append(",")
            i += 1
            seg = i
            continue
        if c in "]}" and pending_comma is not None:
            out[pending_comma] = " "
        if not c.isspace():
            pending_comma = None
        i += 1
    out.append(text[seg:])
    return "".join(out)


def parse_json_text(text: str, path: str) -> Any:
    """Parse JSON text with comments: the standard parser (plain JSON, or JSON once its comments and
    trailing commas are blanked), json5 for any other JSON5 syntax and for the error message."""
    for candidate in (text, None):
        try:
            if candidate is None:
                candidate = strip_comments(text)
            return json.loads(candidate, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError):
            pass
    try:
        return _join_surrogates(json5.loads(text, allow_duplicate_keys=False))
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON: nested too deeply") from None
    except ValueError as exc:
        msg = str(exc).replace("<string>:", "line ").splitlines()[0]
        raise ConfigError(f"{path}: not valid JSON: {_clip_text(msg)}") from None


def _no_duplicates(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")   # json5 below reports it with its line
    return d


def _join_surrogates(v: Any) -> Any:
    """json5 leaves an escaped surrogate pair (``"\\ud83d\\ude00"``, as ``json.dump`` writes any character
    outside the BMP) as two code points; join them into the one character they encode, as JSON does."""
    if isinstance(v, str):
        if any("\ud800" <= c <= "\udfff" for c in v):
            return v.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        return v
    if isinstance(v, list):
        return [_join_surrogates(x) for x in v]
    if isinstance(v, dict):
        return {_join_surrogates(k): _join_surrogates(x) for k, x in v.items()}
    return v

