"""Phone folds keep voicing: every voiced consonant of ARPAbet, TIMIT and espeak-ng lands in the voiced group
(the phone-type and pitch properties group phones by voicing; ZH used to fold into unvoiced SH)."""

from __future__ import annotations

from jaxneurons.data.phones import ARPABET_39, arpabet_to_phone, espeak_to_phone, fold_timit, phone_type

# Voicing of the ARPAbet consonants (CMU dictionary symbols).
ARPABET_VOICED = ("B", "D", "DH", "G", "JH", "L", "M", "N", "NG", "R", "V", "W", "Y", "Z", "ZH")
ARPABET_UNVOICED = ("CH", "F", "HH", "K", "P", "S", "SH", "T", "TH")


def test_arpabet_fold_keeps_every_consonant_voicing():
    assert set(ARPABET_VOICED + ARPABET_UNVOICED) < set(ARPABET_39)
    for p in ARPABET_VOICED:
        assert phone_type(arpabet_to_phone(p + ("1" if p == "ZH" else "")), "en39") == "voiced", p
    for p in ARPABET_UNVOICED:
        assert phone_type(arpabet_to_phone(p), "en39") == "unvoiced", p
    assert arpabet_to_phone("ZH") != arpabet_to_phone("SH")


def test_timit_and_espeak_zh_stay_voiced():
    assert phone_type(fold_timit("zh"), "en39") == "voiced"
    assert phone_type(espeak_to_phone("Z", "en"), "en39") == "voiced"  # the 'measure' fricative
    assert phone_type(espeak_to_phone("S", "en"), "en39") == "unvoiced"
