"""Country names to ISO 3166-1 alpha-2 codes, for the `country` kind of canonical field.

People write a country as a code, an alpha-3 code or a name, in their own language. pycountry
ships the ISO 3166-1 codes, English names and the gettext translations of those names; this
module indexes the alpha-3 codes, the English names and the Persian and Arabic translations,
plus a few aliases everybody uses ("UK", "USA", "ایران"). It is loaded on the first value that is
not an alpha-2 code, so the common case never pays for it.

Lookup keys fold what differs between two spellings of one name but not between two names:
case, accents and Arabic diacritics, the Arabic and Persian forms of yeh and kaf, tatweel, ZWNJ,
dots and other punctuation. The folding is for lookup only; stored values are alpha-2 codes.
"""

from __future__ import annotations

import gettext
import re
import threading
import unicodedata

__all__ = ["country_code"]

# What people write that pycountry does not hold (or holds only in a longer form). Keys are
# folded by `_key` like everything else; values must be alpha-2 codes.
_ALIASES: dict[str, str] = {
    # English
    "UK": "GB", "U.K.": "GB", "Great Britain": "GB", "Britain": "GB", "England": "GB",
    "Scotland": "GB", "Wales": "GB", "Northern Ireland": "GB",
    "USA": "US", "U.S.": "US", "U.S.A.": "US", "America": "US", "United States of America": "US",
    "UAE": "AE", "U.A.E.": "AE", "Emirates": "AE",
    "Iran": "IR", "Persia": "IR", "Russia": "RU", "South Korea": "KR", "Korea South": "KR",
    "Republic of Korea": "KR", "North Korea": "KP", "Syria": "SY", "Vietnam": "VN", "Laos": "LA",
    "Bolivia": "BO", "Venezuela": "VE", "Tanzania": "TZ", "Moldova": "MD",
    "Czech Republic": "CZ", "Turkey": "TR", "Holland": "NL", "The Netherlands": "NL",
    "Vatican": "VA", "Vatican City": "VA", "Palestine": "PS", "Taiwan": "TW", "Macedonia": "MK",
    "Ivory Coast": "CI", "Cape Verde": "CV", "Swaziland": "SZ", "Burma": "MM", "KSA": "SA",
    "Micronesia": "FM", "Brunei": "BN", "Macau": "MO", "DR Congo": "CD", "DRC": "CD",
    "Congo-Kinshasa": "CD", "Congo-Brazzaville": "CG", "East Timor": "TL",
    "The Bahamas": "BS", "The Gambia": "GM", "Kosovo": "XK",
    # Persian
    "ایران": "IR", "امارات": "AE", "آمریکا": "US", "امریکا": "US", "ایالات متحده": "US",
    "انگلیس": "GB", "انگلستان": "GB", "بریتانیا": "GB", "روسیه": "RU", "ترکیه": "TR",
    "کره جنوبی": "KR", "کره شمالی": "KP", "سوریه": "SY", "عربستان": "SA", "هند": "IN",
    # Arabic
    "إيران": "IR", "مصر": "EG", "قطر": "QA", "الإمارات": "AE",
    "الإمارات العربية المتحدة": "AE", "السعودية": "SA", "المملكة العربية السعودية": "SA",
    "أمريكا": "US", "الولايات المتحدة": "US", "الولايات المتحدة الأمريكية": "US",
    "بريطانيا": "GB", "المملكة المتحدة": "GB", "روسيا": "RU", "تركيا": "TR",
    "كوريا الجنوبية": "KR", "كوريا الشمالية": "KP", "سوريا": "SY", "فلسطين": "PS",
}

# Letters that are one letter written two ways (Arabic and Persian keyboards), and marks that
# do not change a name: tatweel, ZWNJ, ZWJ, bidi marks.
_FOLD = str.maketrans({
    "\u064a": "\u06cc", "\u0649": "\u06cc",  # Arabic yeh, alef maksura -> Persian yeh
    "\u0643": "\u06a9",  # Arabic kaf -> Persian keheh
    "\u0629": "\u0647",  # teh marbuta -> heh: "السعوديه" is written for "السعودية"
    "\u0640": None, "\u200c": None, "\u200d": None, "\u200e": None, "\u200f": None,
    "\u061c": None, ".": None,
})
_SEPARATORS = re.compile(r"[\s,\u060c'\u2019()\-/&_]+")
_ARTICLE = "\u0627\u0644"  # Arabic "al-"

_lock = threading.Lock()
_index: dict[str, str] | None = None


def country_code(text: str) -> str | None:
    """The alpha-2 code of an alpha-3 code or a country name (English, Persian, Arabic), or
    None when the text names no country (or names several)."""
    index = _index if _index is not None else _load()
    key = _key(text)
    code = index.get(key)
    if code is None and key.startswith(_ARTICLE):
        code = index.get(key[len(_ARTICLE):])
    return code


def _key(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", bare.translate(_FOLD)).strip()


def _load() -> dict[str, str]:
    global _index
    with _lock:
        if _index is None:
            _index = _build()
        return _index


def _build() -> dict[str, str]:
    import pycountry  # imported here: it reads its JSON database on first use

    translations = [
        gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang], fallback=True)
        for lang in ("fa", "ar")
    ]
    exact: dict[str, set[str]] = {}
    derived: dict[str, set[str]] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        exact.setdefault(_key(country.alpha_3), set()).add(code)
        for attr in ("name", "official_name", "common_name"):
            english = getattr(country, attr, None)
            if not english:
                continue
            for name in (english, *(t.gettext(english) for t in translations)):
                key = _key(name)
                exact.setdefault(key, set()).add(code)
                # "Iran, Islamic Republic of" and "ایران، جمهوری اسلامی" are written "Iran"
                # and "ایران"; "العراق" is also written "عراق".
                head = re.split(r"[,\u060c]", name, maxsplit=1)[0]
                for short in {_key(head), key[len(_ARTICLE):] if key.startswith(_ARTICLE) else ""}:
                    if short and short != key:
                        derived.setdefault(short, set()).add(code)
    index = {key: next(iter(codes)) for key, codes in derived.items() if len(codes) == 1}
    # An exact name beats a derived one ("Congo" is CG, not the head of "Congo, The Democratic
    # Republic of the"); a name two countries share is no answer, unless an alias settles it.
    for key, codes in exact.items():
        if len(codes) == 1:
            index[key] = next(iter(codes))
        else:
            index.pop(key, None)
    index.update({_key(alias): code for alias, code in _ALIASES.items()})
    return index
