"""A small Praat TextGrid reader (long and short text formats; UTF-8 or UTF-16 with BOM).

Both formats hold the same sequence of values; the long one adds ``key =`` names and ``[i]`` indices.
After removing the indices, the quoted strings, numbers and ``<exists>`` flags of either format come in
the same order, which is what ``read_textgrid`` parses. Interval and point tiers are supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INDEX = re.compile(r"\[\s*\d*\s*\]")
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(<exists>|<absent>)')


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
    tokens: list[object] = []
    for m in _TOKEN.finditer(_INDEX.sub("", text)):
        if m.group(1) is not None:
            tokens.append(m.group(1).replace('""', '"'))
        elif m.group(2) is not None:
            tokens.append(float(m.group(2)))
        else:
            tokens.append(m.group(3))
    pos = 0

    def take(kind: type, what: str) -> object:
        nonlocal pos
        if pos >= len(tokens):
            raise TextGridError(f"{source}: file ends where {what} was expected")
        tok = tokens[pos]
        if not isinstance(tok, kind):
            raise TextGridError(f"{source}: expected {what}, found {tok!r}")
        pos += 1
        return tok

    if take(str, "file type") != "ooTextFile" or take(str, "object class") != "TextGrid":
        raise TextGridError(f"{source}: not a Praat TextGrid (expected 'ooTextFile' / 'TextGrid' header)")
    take(float, "xmin")
    take(float, "xmax")
    if take(str, "<exists>") != "<exists>":
        return {}
    n_tiers = int(take(float, "number of tiers"))
    tiers: dict[str, Tier] = {}
    for _ in range(n_tiers):
        kind = take(str, "tier class")
        name = take(str, "tier name")
        xmin = take(float, "tier xmin")
        xmax = take(float, "tier xmax")
        n = int(take(float, "number of items"))
        items = []
        for _ in range(n):
            if kind == "IntervalTier":
                items.append((take(float, "interval xmin"), take(float, "interval xmax"), take(str, "interval text")))
            elif kind == "TextTier":
                items.append((take(float, "point time"), take(str, "point mark")))
            else:
                raise TextGridError(f"{source}: unknown tier class {kind!r}")
        if name in tiers:
            raise TextGridError(f"{source}: two tiers named {name!r}")
        tiers[name] = Tier(name, kind, xmin, xmax, tuple(items))
    return tiers
