"""A small deterministic sentence generator over bundled word lists (English and Turkish).

The word lists are ours (written for this project, no external corpus): common words in a few
templates, so a synthetic corpus has varied phone contexts without any download. Sentences are a pure
function of a ``numpy.random.Generator``, so a seed fixes every sentence.

English templates follow subject-verb-object order; Turkish templates are subject-object-verb with
ready-made inflected forms (accusative objects, locative places, conjugated verbs), so no Turkish
morphology is computed here.
"""

from __future__ import annotations

import numpy as np

from jaxneurons.errors import SettingError

_EN = {
    "det": ["the", "a", "this", "that", "my", "our", "every", "one"],
    "adj": [
        "big", "small", "old", "young", "green", "red", "blue", "yellow", "quiet", "loud", "happy", "tired",
        "clever", "gentle", "bright", "dark", "warm", "cold", "heavy", "light", "strange", "busy", "lazy",
        "brave", "careful", "friendly", "hungry", "famous", "simple", "sharp", "smooth", "rough", "sweet",
        "fresh", "ancient", "modern", "golden", "silver", "wooden", "narrow",
    ],
    "noun": [
        "dog", "cat", "bird", "horse", "teacher", "doctor", "farmer", "child", "woman", "man", "king",
        "queen", "driver", "singer", "painter", "student", "neighbour", "sailor", "baker", "pilot", "fox",
        "rabbit", "monkey", "turtle", "mouse", "lion", "tiger", "engineer", "nurse", "girl", "boy",
        "captain", "soldier", "writer", "dancer", "cook", "judge", "farmer's wife", "old fisherman",
    ],
    "thing": [
        "book", "letter", "apple", "window", "garden", "bottle", "chair", "table", "river", "mountain",
        "basket", "picture", "song", "story", "bridge", "shoe", "jacket", "lamp", "clock", "key", "boat",
        "village", "road", "flower", "treasure", "orange", "sandwich", "message", "ladder", "wheel",
        "mirror", "pencil", "blanket", "kettle", "bicycle", "violin", "cushion", "bucket", "feather",
        "machine",
    ],
    "verb_t": [
        "found", "carried", "opened", "painted", "watched", "cleaned", "pushed", "dropped", "sold",
        "bought", "visited", "remembered", "described", "chose", "fixed", "hid", "borrowed", "measured",
        "touched", "washed", "followed", "needed", "wanted", "saw", "heard", "kept", "lost", "threw",
        "caught", "built", "broke", "drew", "read", "wrote", "brought", "used", "showed", "moved",
    ],
    "verb_i": [
        "smiled", "laughed", "waited", "slept", "arrived", "shouted", "whispered", "jumped", "danced",
        "listened", "travelled", "worked", "played", "walked", "ran", "sang", "swam", "left", "returned",
        "rested", "stopped", "started", "disappeared", "changed", "grew", "fell", "spoke", "thought",
    ],
    "adv": [
        "quickly", "slowly", "quietly", "happily", "carefully", "suddenly", "again", "today", "yesterday",
        "early", "late", "often", "never", "always", "sometimes", "together", "alone", "badly", "gladly",
        "softly",
    ],
    "prep": ["near", "behind", "under", "above", "beside", "inside", "across", "around", "beyond", "past"],
    "name": [
        "Anna", "David", "Maria", "Peter", "Susan", "Thomas", "Laura", "George", "Emma", "Oliver", "Sophie",
        "Daniel", "Helen", "James", "Lucy", "Robert", "Alice", "Henry", "Grace", "Simon",
    ],
}

_EN_TEMPLATES = [
    "{Det} {adj} {noun} {verb_t} {det} {thing}.",
    "{Det} {noun} {verb_i} {adv}.",
    "{Name} {verb_t} {det} {adj} {thing} {prep} the {thing}.",
    "{Det} {adj} {noun} {verb_i} {prep} {det} {adj} {thing}.",
    "{Name} and {name} {verb_i} {adv}, and then they {verb_t} {det} {thing}.",
    "Did {det} {noun} {verb_t_present} {det} {thing} {adv}?",
    "{Adv}, {det} {noun} {verb_t} {det} {adj} {thing}.",
    "{Name} {verb_i} {prep} the {thing} because the {noun} {verb_t} {det} {thing}.",
]

# Present tense of the transitive verbs, for questions ("Did the dog find ...?").
_EN_PRESENT = {
    "found": "find", "carried": "carry", "opened": "open", "painted": "paint", "watched": "watch",
    "cleaned": "clean", "pushed": "push", "dropped": "drop", "sold": "sell", "bought": "buy",
    "visited": "visit", "remembered": "remember", "described": "describe", "chose": "choose",
    "fixed": "fix", "hid": "hide", "borrowed": "borrow", "measured": "measure", "touched": "touch",
    "washed": "wash", "followed": "follow", "needed": "need", "wanted": "want", "saw": "see",
    "heard": "hear", "kept": "keep", "lost": "lose", "threw": "throw", "caught": "catch", "built": "build",
    "broke": "break", "drew": "draw", "read": "read", "wrote": "write", "brought": "bring", "used": "use",
    "showed": "show", "moved": "move",
}

_TR = {
    "adj": [
        "küçük", "büyük", "yaşlı", "genç", "güzel", "mutlu", "yorgun", "akıllı", "sessiz", "kırmızı",
        "mavi", "yeşil", "sarı", "beyaz", "siyah", "sıcak", "soğuk", "yeni", "eski", "uzun", "kısa",
        "hızlı", "yavaş", "tatlı", "temiz", "güçlü", "cesur", "neşeli", "zengin", "kibar",
    ],
    "noun": [
        "kedi", "köpek", "kuş", "at", "öğretmen", "doktor", "çiftçi", "çocuk", "kadın", "adam", "kız",
        "oğlan", "öğrenci", "komşu", "şoför", "aşçı", "balıkçı", "ressam", "yazar", "dede", "nine", "asker",
        "kaptan", "hemşire", "tavşan", "aslan", "kaplan", "maymun", "kaplumbağa", "fare", "jandarma",
    ],
    "obj": [
        "kitabı", "mektubu", "elmayı", "pencereyi", "şişeyi", "sandalyeyi", "masayı", "resmi", "şarkıyı",
        "hikayeyi", "ayakkabıyı", "ceketi", "lambayı", "saati", "anahtarı", "tekneyi", "çiçeği", "hazineyi",
        "portakalı", "ekmeği", "suyu", "çayı", "kalemi", "battaniyeyi", "aynayı", "bisikleti", "kapıyı",
        "defteri", "topu", "sepeti",
    ],
    "place": [
        "evde", "bahçede", "okulda", "parkta", "köyde", "şehirde", "denizde", "dağda", "ormanda", "sokakta",
        "mutfakta", "pazarda", "köprüde", "nehirde", "odada", "trende", "gemide", "tarlada", "kütüphanede",
        "hastanede", "garajda",
    ],
    "verb_t": [
        "buldu", "taşıdı", "açtı", "boyadı", "izledi", "temizledi", "itti", "düşürdü", "sattı", "aldı",
        "hatırladı", "seçti", "tamir etti", "sakladı", "ölçtü", "yıkadı", "gördü", "duydu", "tuttu",
        "kaybetti", "attı", "yakaladı", "okudu", "yazdı", "getirdi", "kullandı", "gösterdi", "istedi",
        "sevdi", "çizdi",
    ],
    "verb_i": [
        "gülümsedi", "güldü", "bekledi", "uyudu", "geldi", "bağırdı", "fısıldadı", "zıpladı", "dans etti",
        "dinledi", "çalıştı", "oynadı", "yürüdü", "koştu", "şarkı söyledi", "yüzdü", "gitti", "döndü",
        "dinlendi", "durdu", "başladı", "kayboldu", "büyüdü", "düştü", "konuştu", "düşündü", "ağladı",
        "uyandı", "oturdu", "bekliyor",
    ],
    "adv": [
        "hızla", "yavaşça", "sessizce", "mutlulukla", "dikkatle", "birden", "yine", "bugün", "dün",
        "erkenden", "geç", "sık sık", "her zaman", "bazen", "birlikte", "yalnız", "sabahleyin", "akşam",
        "hemen", "sonra",
    ],
    "name": [
        "Ayşe", "Mehmet", "Fatma", "Ali", "Zeynep", "Mustafa", "Elif", "Ahmet", "Emine", "Hasan", "Merve",
        "Hüseyin", "Büşra", "İbrahim", "Özge", "Murat", "Gül", "Emre", "Deniz", "Burak",
    ],
}

_TR_TEMPLATES = [
    "{Adj} {noun} {obj} {verb_t}.",
    "{Name} {place} {adv} {verb_i}.",
    "{Adj} {noun} {place} {adj} {obj} {verb_t}.",
    "{Name} ve {name} {adv} {verb_i}.",
    "{Adv} {adj} {noun} {verb_i}.",
    "{Name} {place} {obj} {verb_t} ve sonra {verb_i}.",
    "{Noun} {obj} {place} {verb_t} mi?",
    "{Name} {adj} {noun} ile {place} {verb_i}.",
]

LANGUAGES = ("en", "tr")


def _cap(word: str, language: str) -> str:
    """Capitalise the first letter (Turkish i -> İ)."""
    if not word:
        return word
    if language == "tr" and word[0] == "i":
        return "İ" + word[1:]
    return word[0].upper() + word[1:]


def _fill(template: str, words: dict[str, list[str]], rng: np.random.Generator, language: str) -> str:
    out = []
    i = 0
    while i < len(template):
        j = template.find("{", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        k = template.index("}", j)
        slot = template[j + 1 : k]
        cap = slot[0].isupper()
        key = slot.lower()
        if key == "verb_t_present":
            choice = _EN_PRESENT[str(rng.choice(words["verb_t"]))]
        else:
            choice = str(rng.choice(words[key]))
        out.append(_cap(choice, language) if cap else choice)
        i = k + 1
    return "".join(out)


def sentence(language: str, rng: np.random.Generator) -> str:
    """One random sentence in ``language`` ("en" or "tr"), a pure function of ``rng``'s state."""
    if language == "en":
        template = _EN_TEMPLATES[int(rng.integers(len(_EN_TEMPLATES)))]
        return _fill(template, _EN, rng, language)
    if language == "tr":
        template = _TR_TEMPLATES[int(rng.integers(len(_TR_TEMPLATES)))]
        return _fill(template, _TR, rng, language)
    raise SettingError(f"no word lists for language {language!r}; have {LANGUAGES}")


def all_words(language: str) -> list[str]:
    """Every bundled word/phrase of a language (for coverage checks of the phone mapping)."""
    if language == "en":
        words = [w for v in _EN.values() for w in v] + list(_EN_PRESENT.values())
        words += ["and", "then", "they", "did", "because"]
    elif language == "tr":
        words = [w for v in _TR.values() for w in v] + ["ve", "sonra", "mi", "ile"]
    else:
        raise SettingError(f"no word lists for language {language!r}; have {LANGUAGES}")
    return sorted(set(words))
