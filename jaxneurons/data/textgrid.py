"""Praat TextGrids (long and short text formats, UTF-8 or UTF-16), parsed by ``praatio`` (which MFA uses too).

``read_textgrid(path)`` returns ``{tier name: Tier}``; every problem is a :class:`TextGridError` naming the file
(undecodable text, a file that is not a TextGrid, a truncated or malformed one, two tiers of the same name).
Interval tiers keep their empty intervals (``(xmin, xmax, "")``), so the caller sees gaps as they are written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r'^\s*(?:File type\s*=\s*)?"ooTextFile(?: short)?"\s*\n\s*(?:Object class\s*=\s*)?"TextGrid"')


class TextGridError(ValueError):
    """A TextGrid file that cannot be parsed; the message names the file."""


@dataclass(frozen=True)
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier"
    xmin: float
    xmax: float
    items: tuple  # intervals: (xmin, xmax, text); points: (time, mark)


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff"):
        return raw.decode("utf-16")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    return raw.decode("utf-8")


def read_textgrid(path: str) -> dict[str, Tier]:
    """Parse a TextGrid file into ``{tier name: Tier}``; raises TextGridError naming the file."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        raise TextGridError(f"{path}: not UTF-8/UTF-16 text ({exc})") from None
    return parse_textgrid(text, path)


def parse_textgrid(text: str, source: str = "<string>") -> dict[str, Tier]:
    """Parse TextGrid text (``source`` names it in errors)."""
    from praatio.utilities import textgrid_io

    if not _HEADER.match(text):
        raise TextGridError(f"{source}: not a Praat TextGrid (expected 'ooTextFile' / 'TextGrid' header)")
    try:
        grid = textgrid_io.parseTextgridStr(text, includeEmptyIntervals=True)
    except Exception as exc:  # praatio signals a malformed file with IndexError, ValueError, ParsingError, ...
        detail = str(exc) or type(exc).__name__
        raise TextGridError(f"{source}: malformed or truncated TextGrid ({detail})") from None
    tiers: dict[str, Tier] = {}
    for tier in grid["tiers"]:
        kind, name = tier["class"], tier["name"]
        if kind == "IntervalTier":
            items = tuple((float(e.start), float(e.end), e.label) for e in tier["entries"])
        elif kind == "TextTier":
            items = tuple((float(e.time), e.label) for e in tier["entries"])
        else:
            raise TextGridError(f"{source}: unknown tier class {kind!r}")
        if name in tiers:
            raise TextGridError(f"{source}: two tiers named {name!r}")
        tiers[name] = Tier(name, kind, float(tier["xmin"]), float(tier["xmax"]), items)
    return tiers
