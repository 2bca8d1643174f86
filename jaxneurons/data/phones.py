"""Phone sets, phone-type groups and the maps into them (espeak-ng, TIMIT, ARPAbet/MFA).

Phone sets (labels in manifests are validated against the set named by the utterance's ``phone_set``):

``en39`` - English, the 39-class merged TIMIT set of Lee & Hon (1989), ARPAbet names in lower case,
including ``sil``. The TIMIT 61 -> 39 folding is: ao -> aa; ax, ax-h -> ah; axr -> er; hv -> hh;
ix -> ih; el -> l; em -> m; en, nx -> n; eng -> ng; zh -> jh; ux -> uw; the closures pcl tcl kcl bcl dcl
gcl and h#, pau, epi -> sil; q (glottal stop) is deleted (its samples are left unlabelled).
Groups: vowel = aa ae ah aw ay eh er ey ih iy ow oy uh uw; voiced consonant = b d dh dx g jh l m n ng r
v w y z; unvoiced consonant = ch f hh k p s sh t th. ``sil`` has no group. Lee & Hon fold zh into sh;
we fold it into jh instead (same place of articulation, and voiced like zh), so that every voiced phone
stays in the voiced group the phone-type and pitch properties use (ARPAbet ZH and espeak Z likewise).

``tr29`` - Turkish, one label per Turkish letter as written (8 vowels + 20 consonants) plus ``sil``.
Groups: vowel = a e ı i o ö u ü; voiced = b c d g j l m n r v y z; unvoiced = ç f h k p s ş t
(c = /dʒ/, ç = /tʃ/, j = /ʒ/, ş = /ʃ/, y = /j/). The soft g (ğ) has no label: espeak realises it as
lengthening of the preceding vowel or as [j] (-> y); a velar fricative, if ever emitted, is folded into g.
Allophones are folded into their letter (palatal k/g, dark l, tapped r, open e, lax i, ...).

espeak-ng mnemonics (phoneme events; stress marks ``'``, ``,``, ``%``, ``=`` are stripped first) map to
these sets through ``ESPEAK_EN`` / ``ESPEAK_TR`` below, with per-accent overrides in
``ESPEAK_EN_ACCENT``. The English map follows the CMU dictionary's lexical choices (e.g. NORTH and
FORCE -> aa as CMU's AO folded into aa; NEAR -> iy; CURE -> uh; syllabic @L -> l as TIMIT's el -> l),
except where espeak realises a different sound: the flap ``t#`` -> dx, the dental stop ``t[`` of
Caribbean English -> t, the glottal stop ``?`` (an allophone of /t/ in espeak) -> t, the BATH vowel
``aa`` -> ae except in southern British accents (en, en-gb-x-rp) where espeak says [ɑː] -> aa, the
linking glide ``;`` -> y. Pauses (``_``, ``_:``, ``_!``, ``_|``, ``_^_``) -> sil. An unknown mnemonic
raises ``UnknownPhoneError``: nothing is silently dropped. The maps cover every phoneme that the
English tables en, en-us, en-sc, en-rp, en-wi, en-us-nyc, en-n, en-wm and the Turkish table of
espeak-ng 1.52 define, plus the shared consonants they use.
"""

from __future__ import annotations

import re

PHONE_TYPES = ("vowel", "voiced", "unvoiced")
SILENCE = "sil"

_EN_VOWELS = ("aa", "ae", "ah", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw")
_EN_VOICED = ("b", "d", "dh", "dx", "g", "jh", "l", "m", "n", "ng", "r", "v", "w", "y", "z")
_EN_UNVOICED = ("ch", "f", "hh", "k", "p", "s", "sh", "t", "th")
_TR_VOWELS = ("a", "e", "ı", "i", "o", "ö", "u", "ü")
_TR_VOICED = ("b", "c", "d", "g", "j", "l", "m", "n", "r", "v", "y", "z")
_TR_UNVOICED = ("ç", "f", "h", "k", "p", "s", "ş", "t")


def _types(vowels: tuple, voiced: tuple, unvoiced: tuple) -> dict[str, str | None]:
    out: dict[str, str | None] = {SILENCE: None}
    out.update({p: "vowel" for p in vowels})
    out.update({p: "voiced" for p in voiced})
    out.update({p: "unvoiced" for p in unvoiced})
    return out


# name -> {label: type or None}; insertion order is the set's canonical order.
PHONE_SETS: dict[str, dict[str, str | None]] = {
    "en39": _types(_EN_VOWELS, _EN_VOICED, _EN_UNVOICED),
    "tr29": _types(_TR_VOWELS, _TR_VOICED, _TR_UNVOICED),
}
# The default phone set of each language.
LANGUAGE_PHONE_SET = {"en": "en39", "tr": "tr29"}


class UnknownPhoneError(ValueError):
    """A phone label or espeak mnemonic outside the mapping."""


def register_phone_set(name: str, types: dict[str, str | None]) -> None:
    """Add a phone set (label -> "vowel" | "voiced" | "unvoiced" | None) for manifest validation."""
    bad = {k: v for k, v in types.items() if v is not None and v not in PHONE_TYPES}
    if bad:
        raise ValueError(f"phone set {name!r}: types must be one of {PHONE_TYPES} or None, got {bad}")
    if name in PHONE_SETS and PHONE_SETS[name] != types:
        raise ValueError(f"phone set {name!r} is already registered with different labels")
    PHONE_SETS[name] = dict(types)


def _resolve(language_or_set: str) -> dict[str, str | None]:
    name = LANGUAGE_PHONE_SET.get(language_or_set, language_or_set)
    if name not in PHONE_SETS:
        raise KeyError(
            f"no phone set for {language_or_set!r}; languages {sorted(LANGUAGE_PHONE_SET)}, sets {sorted(PHONE_SETS)}"
        )
    return PHONE_SETS[name]


def phone_set(language_or_set: str) -> list[str]:
    """The labels of a phone set (by set name or language), in canonical order (sil first)."""
    return list(_resolve(language_or_set))


def phone_type(label: str, language_or_set: str) -> str | None:
    """"vowel" | "voiced" | "unvoiced" for a phone, None for sil; raises on a label outside the set."""
    table = _resolve(language_or_set)
    if label not in table:
        raise UnknownPhoneError(f"phone {label!r} is not in phone set for {language_or_set!r}")
    return table[label]


# --- espeak-ng -> en39 -------------------------------------------------------------------------------
_PAUSES = {"_": SILENCE, "_:": SILENCE, "_!": SILENCE, "_|": SILENCE, "_^_": SILENCE, "_!_": SILENCE}

ESPEAK_EN: dict[str, str] = {
    **_PAUSES,
    # vowels
    "@": "ah", "@-": "ah", "@2": "ah", "@5": "ah", "@#": "ah", "a#": "ah", "a#2": "ah", "V": "ah",
    "3": "er", "3:": "er", "IR": "er", "VR": "er",
    "@L": "l",
    "a": "ae", "a2": "ae", "a/": "ae", "aa": "ae",
    "A:": "aa", "A@": "aa", "A#": "aa", "A~": "aa",
    "0": "aa", "0#": "aa", "02": "aa", "O": "aa", "O2": "aa", "O:": "aa", "O@": "aa", "o@": "aa", "O~": "aa",
    "E": "eh", "E2": "eh", "E#": "eh", "e#": "eh", "e@": "eh",
    "eI": "ey", "e:": "ey",
    "I": "ih", "I2": "ih", "I#": "ih", "I2#": "ih",
    "i": "iy", "i:": "iy", "i@": "iy", "i@3": "iy",
    "oU": "ow", "oU#": "ow", "o:": "ow",
    "OI": "oy",
    "U": "uh", "U@": "uh",
    "u:": "uw",
    "aI": "ay", "aI2": "ay", "aI3": "ay", "aI@": "ay",
    "aU": "aw", "aU@": "aw",
    # consonants
    "p": "p", "b": "b", "t": "t", "t2": "t", "t[": "t", "?": "t", "d": "d", "d#": "d", "d[": "d",
    "t#": "dx", "k": "k", "g": "g",
    "f": "f", "v": "v", "T": "th", "D": "dh", "s": "s", "z": "z", "z#": "z", "z/2": "z",
    "S": "sh", "Z": "jh", "h": "hh", "x": "hh", "C": "hh",
    "tS": "ch", "dZ": "jh",
    "m": "m", "m-": "m", "n": "n", "n-": "n", "N": "ng",
    "l": "l", "l-": "l", "l/": "l", "l/2": "l", "L": "l",
    "r": "r", "r-": "r", "r/": "r", "*": "r",
    "w": "w", "w#": "w", "j": "y", ";": "y",
}
# Accent-specific exceptions: southern British BATH is [ɑː].
ESPEAK_EN_ACCENT: dict[str, dict[str, str]] = {
    "en": {"aa": "aa"},
    "en-gb-x-rp": {"aa": "aa"},
}

ESPEAK_TR: dict[str, str] = {
    **_PAUSES,
    "a": "a", "e": "e", "E": "e", "&": "e", "@": "ı", "i": "i", "I": "i", "o": "o", "O": "o",
    "W": "ö", "u": "u", "U": "u", "y": "ü", "Y": "ü",
    "b": "b", "dZ": "c", "tS": "ç", "d": "d", "f": "f", "g": "g", "J": "g", "G": "g", "h": "h", "x": "h",
    "Z": "j", "k": "k", "c": "k", "l": "l", "L": "l", "l^": "l", "m": "m", "n": "n", "N": "n", "p": "p",
    "r": "r", "R": "r", "*": "r", "r-": "r", "s": "s", "S": "ş", "t": "t", "v": "v", "w": "v", "j": "y",
    "z": "z",
}

_STRESS = re.compile(r"^[',%=]+")


def espeak_to_phone(mnemonic: str, language: str, accent: str | None = None, context: str = "") -> str:
    """Map one espeak phoneme-event mnemonic (stress marks allowed) to the language's phone set."""
    base = _STRESS.sub("", mnemonic)
    if language == "en":
        table = ESPEAK_EN
        override = ESPEAK_EN_ACCENT.get(accent or "", {})
        if base in override:
            return override[base]
    elif language == "tr":
        table = ESPEAK_TR
    else:
        raise UnknownPhoneError(f"no espeak phoneme map for language {language!r}")
    if base not in table:
        where = f" in {context}" if context else ""
        raise UnknownPhoneError(
            f"espeak mnemonic {mnemonic!r} (language {language}, accent {accent}){where} has no mapping; "
            "add it to jaxneurons/data/phones.py"
        )
    return table[base]


# --- TIMIT 61 -> 39 --------------------------------------------------------------------------------
TIMIT_61 = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch", "d", "dcl", "dh", "dx",
    "eh", "el", "em", "en", "eng", "epi", "er", "ey", "f", "g", "gcl", "h#", "hh", "hv", "ih", "ix",
    "iy", "jh", "k", "kcl", "l", "m", "n", "ng", "nx", "ow", "oy", "p", "pau", "pcl", "q", "r", "s",
    "sh", "t", "tcl", "th", "uh", "uw", "ux", "v", "w", "y", "z", "zh",
)
_TIMIT_FOLD = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m",
    "en": "n", "nx": "n", "eng": "ng", "zh": "jh", "ux": "uw",
    "pcl": SILENCE, "tcl": SILENCE, "kcl": SILENCE, "bcl": SILENCE, "dcl": SILENCE, "gcl": SILENCE,
    "h#": SILENCE, "pau": SILENCE, "epi": SILENCE, "q": None,
}


def fold_timit(label: str) -> str | None:
    """TIMIT 61-phone label -> en39 (Lee & Hon, except zh -> jh); None for the deleted glottal stop q."""
    if label not in TIMIT_61:
        raise UnknownPhoneError(f"{label!r} is not a TIMIT phone")
    return _TIMIT_FOLD.get(label, label)


# --- ARPAbet (CMU / Montreal Forced Aligner english_us_arpa) -> en39 ---------------------------------
ARPABET_39 = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
    "W", "Y", "Z", "ZH",
)
ARPABET_SILENCE = ("", "sil", "sp", "SIL", "SP", "<eps>")
ARPABET_SPOKEN_NOISE = ("spn", "SPN", "<unk>")


def arpabet_to_phone(label: str) -> str | None:
    """ARPAbet with optional stress digit -> en39; sil/sp/empty -> sil; spn (spoken noise) -> None."""
    if label in ARPABET_SILENCE:
        return SILENCE
    if label in ARPABET_SPOKEN_NOISE:
        return None
    base = label.rstrip("012").upper()
    if base not in ARPABET_39:
        raise UnknownPhoneError(f"{label!r} is not an ARPAbet phone (IPA phone sets are not supported)")
    return {"AO": "aa", "ZH": "jh"}.get(base, base.lower())  # ZH stays voiced (module docstring)
