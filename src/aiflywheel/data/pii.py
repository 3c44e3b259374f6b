"""Find and scrub personal data (PII) in free text with regexes plus validation.

The engine is offline and dependency-free: every detector is a precompiled regular
expression followed by a validity check (checksums, dates, octet ranges, context
words). It is tuned for Chinese and English product data (reviews, support tickets,
chat logs, order notes, app logs), where precision matters as much as recall: a
scrubber that eats order numbers, dates and version strings ruins the data set.

Types and what counts as one of them
====================================

``email``
    ``local@domain.tld`` with subdomains and plus-tags. ASCII only, so Chinese text
    may touch the address on both sides (``联系我zhang.san@qq.com谢谢``). Not emails:
    ``@mentions``, hosts without a dot (``user@localhost``: no public domain, so no
    person can be reached through it), retina asset names (``icon@2x.png``: the
    "top-level domain" is a file extension), package pins (``lodash@4.17.21``),
    scp-style git remotes (``git@github.com:org/repo.git``) and the ``user@host``
    part of a URL's authority (that is a ``url_secret`` or nothing).
``phone``
    Chinese mobiles (``1[3-9]`` + 9 digits, optional ``+86``/``0086``/``86``/``(+86)``
    prefix, grouped 3-4-4 by one consistent space or dash); Chinese landlines with an
    area code and a separator (``010-12345678``, ``(0755)1234567``, ``021 6123 4567``,
    ``021-61234567-8001`` with its extension; an ungrouped ``075512345678`` is too
    easily an order number); North-American numbers (``(415) 555-0132``,
    ``415-555-0132``, ``212.555.0147``, ``+1 415 555 0132``, ``1-800-555-0199``; an
    ungrouped ``4155550132`` only with ``+1``), which also covers Chinese ``400-``/
    ``800-`` service numbers; and other international numbers that start with ``+``
    and a country code (8-15 digits in all). Rejected as part of something else: a
    number glued to letters or digits, continuing a dashed/dotted/colon sequence (or a
    space-grouped one, when grouped by spaces itself), introduced by an order/
    tracking/serial keyword (``订单号``, ``order #``, ``IMEI``), standing after ``=`` as
    a formula's result, or forming a URL path segment (``/p/13812345678``). An
    ungrouped 11-digit ``1[3-9]`` number without such context is a mobile number:
    its shape is all there is.
``cn_id``
    18-character resident ID: province code, a real birth date (1900..today), 3-digit
    sequence and the ISO 7064 MOD 11-2 check character (``X`` either case). It may be
    written grouped 6-8-4 with single spaces. Legacy 15-digit IDs (no checksum, so
    ~4% of random 15-digit numbers have a valid ``YYMMDD``) are accepted only when a
    word such as ``身份证``/``证件``/``ID card`` stands within 24 characters before or
    12 after them. Letters may touch an 18-digit ID on the left (``ID310115...``):
    the date and checksum make a false hit unlikely.
``bank_card``
    13-19 digits, plain or grouped in 4s (and Amex/Diners 4-6-5/4-6-4) with one
    consistent space or dash, passing Luhn, not a valid ``cn_id``, with an issuer
    prefix in use and a length that issuer uses (Visa 4: 13/16/19, Mastercard
    51-55/2221-2720: 16, Amex 34/37: 15, Diners 30/36/38: 14-19, JCB 3528-3589: 16-19,
    UnionPay/Discover/Maestro 6x/50/56-58: 16-19), and not introduced by an order,
    serial, barcode or IMEI keyword nor the result of a formula (``F(91) = ...``).
    Luhn alone passes one random number in ten: on the shipped corpus it reports 10
    false cards (Luhn-valid order and serial numbers, an EAN-13 barcode, IMEIs, a
    Fibonacci number). The context rule removes all 10; the prefix/length rule alone
    removes 4 (EAN-13 codes start with 69 and have 13 digits, IMEIs have 15) and is
    kept because barcodes and IMEIs often come without a keyword. Neither rule lost
    a real card on the corpus. Context words are not required for a card.
``ip``
    IPv4 dotted quads with octets 0-255 and no leading zeros, not part of a longer
    dotted number (``1.2.3.4.5``, OIDs) and not glued to letters, so ``v1.2.3.4`` is
    a version, not an address. Its shape alone cannot tell ``1.2.3.4`` the version
    from ``1.2.3.4`` the host, so context decides, in this order: a version word
    right before (``version``, ``ver``, ``build``, ``kernel``, ``版本``, ``固件``,
    ``第``, ``section``, a ``Chrome/``-style product token) or ``版本``/``节`` right
    after makes it a version; else a network word right before (``IP``, ``from``,
    ``server``, ``host``, ``地址``, ``服务器``, ``从``...) makes it an address; else a
    version-ish word up to 40 characters before (``driver``, ``CUDA``, ``cuDNN``,
    ``SDK``, ``驱动``...) makes it a version; else it is an address. IPv6 in full,
    compressed and IPv4-embedded forms, validated by :mod:`ipaddress`; a candidate
    needs at least one decimal digit so that ``cafe::beef``-like code is left alone,
    and MAC addresses and clock times never validate.
``url_secret``
    Inside URLs (with a scheme, ``www.``, a bare ``host.tld/`` or a ``/path``): values
    of query or fragment parameters named like a credential (``token``,
    ``access_token``, ``api_key``, ``apikey``, ``key``, ``secret``, ``password``,
    ``pwd``, ``sig``, ``signature``, ``auth``, ``session``, ``sid``, ``code`` and names
    ending in ``_token``/``-signature``/``_secret``/...), and ``user:pass`` userinfo
    of ``scheme://user:pass@host``. The match covers the value only. Values shorter
    than 4 characters (``auth=1``) and obvious placeholders (``<TOKEN>``,
    ``${API_KEY}``, ``YOUR_KEY``, ``xxx``, ``***``) are not secrets. Also matched:
    well-known bare tokens (OpenAI ``sk-...``, GitHub ``ghp_...``, AWS ``AKIA...``,
    Slack ``xox?-...``, Google ``AIza...``, JWTs, ``Bearer <token>``). ``key=value``
    pairs outside URLs are not scanned.

Overlaps are resolved by type priority ``url_secret > email > cn_id > bank_card >
phone > ip`` and then by earliest, longest span, so the result is sorted and never
overlaps. Only the requested types are run: asking for ``phone`` alone reports the
digits of ``13812345678@163.com`` as a phone, which is the safe reading when e-mails
are kept on purpose.

Before detection a text is normalized (:func:`normalized_views`): format characters
(Unicode Cf: zero-width spaces, bidi marks and overrides, word joiners, BOM, tag
characters) are dropped, and full-width forms and odd spaces are folded as NFKC folds
them, so ``１３８１２３４５６７８`` and ``138\\u200e1234\\u200e5678`` are phones. A match
is reported as the span of the original text it covers, format characters included.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiflywheel.errors import RecipeError

__all__ = [
    "PII_TYPES",
    "PLACEHOLDERS",
    "REDACT_MODES",
    "SCRUB_MODES",
    "PiiMatch",
    "find_pii",
    "normalized_views",
    "redact_text",
    "scrub",
]

PII_TYPES: tuple[str, ...] = ("email", "phone", "cn_id", "bank_card", "ip", "url_secret")
PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "cn_id": "<CN_ID>",
    "bank_card": "<BANK_CARD>",
    "ip": "<IP>",
    "url_secret": "<SECRET>",
}
REDACT_MODES: tuple[str, ...] = ("redact", "mask")
SCRUB_MODES: tuple[str, ...] = ("redact", "mask", "off", "drop_row")

# Which detector wins when two spans overlap (lower wins).
_PRIORITY: dict[str, int] = {
    "url_secret": 0,
    "email": 1,
    "cn_id": 2,
    "bank_card": 3,
    "phone": 4,
    "ip": 5,
}


@dataclass(frozen=True)
class PiiMatch:
    """One piece of PII found in a text: its type, its span and the matched value."""

    type: str
    start: int
    end: int
    value: str


# --------------------------------------------------------------------------- helpers

# Cheap pre-filters: a text without them cannot hold the PII in question.
_HAS_DIGIT = re.compile(r"[0-9]").search
_HAS_RUN3 = re.compile(r"[0-9]{3}").search
_HAS_RUN4 = re.compile(r"[0-9]{4}").search

# A keyword right before a number saying it is an order/tracking/serial number.
_NUMBER_NEG_CONTEXT = re.compile(
    r"(?:订单|单号|运单|快递|物流|编号|流水|交易|工单|批次|发票|货号|条码|序列号|会员号|"
    r"(?<![A-Za-z])(?:order|orders|tracking|waybill|invoice|txn|transaction|serial|batch|"
    r"ticket|ref|reference|barcode|ean|upc|sku|imei|meid|sn|s/n|id|no|asin|isbn|case|"
    r"account\s+id|user\s+id|uid))"
    r"\s*(?:号码|号|no\.?|number|num|id|#)?\s*[:：#=]?\s*#?\s*$",
    re.IGNORECASE,
)


# The number is the result of a formula: "F(91) = 4660046610375530309", "2^64 = ...".
_MATH_BEFORE = re.compile(r"[)\]0-9]\s*[=≈]\s*$")
_URL_BEFORE = re.compile(r"(?:://|www\.)[^\s]*$")


def _neg_number_context(text: str, start: int) -> bool:
    """True when the number at ``start`` is an order/serial number, a formula result or
    a segment of a URL path (``https://shop.example.com/p/13812345678``)."""
    lo = max(0, start - 20)
    if _NUMBER_NEG_CONTEXT.search(text, lo, start) or _MATH_BEFORE.search(text, lo, start):
        return True
    return (
        start > 0
        and text[start - 1] == "/"
        and _URL_BEFORE.search(text, max(0, start - 200), start) is not None
    )


def _glued(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` continues a longer dashed/dotted/timed number, or
    (when it is grouped by spaces itself) a longer space-grouped one."""
    seps = ".-: " if " " in text[start:end] else ".-:"
    if start >= 2 and text[start - 1] in seps and text[start - 2].isdigit():
        return True
    return end + 1 < len(text) and text[end] in seps and text[end + 1].isdigit()


def _digits(value: str) -> str:
    """The decimal digits of ``value``, in order."""
    return "".join(ch for ch in value if ch.isdigit())


# --------------------------------------------------------------------------- email

_EMAIL = re.compile(
    r"[A-Za-z0-9_%+\-](?<![A-Za-z0-9._%+\-][A-Za-z0-9_%+\-])"
    r"(?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})"
    r"(?![A-Za-z0-9_\-])"
)
# "Top-level domains" that are really file extensions (icon@2x.png, bundle@1.js).
_FILE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "js", "mjs",
     "css", "map", "json", "txt", "log", "html", "htm", "xml", "yaml", "yml", "pdf", "apk",
     "ipa", "mp3", "mp4", "wav", "exe", "dll", "csv"}
)  # fmt: skip
_URL_AUTHORITY_START = re.compile(r"://[^\s/?#]*$")


def _find_email(text: str) -> list[PiiMatch]:
    """E-mail candidates in ``text`` (see the module docstring for the rules)."""
    if "@" not in text:
        return []
    out = []
    for m in _EMAIL.finditer(text):
        if m.group(1).lower() in _FILE_EXTENSIONS:
            continue
        start, end = m.span()
        # scp-style git remote: git@github.com:org/repo.git
        if end + 1 < len(text) and text[end] == ":" and text[end + 1] not in " \t\n":
            continue
        # user@host inside a URL authority: scheme://user:pass@host
        if _URL_AUTHORITY_START.search(text, max(0, start - 200), start):
            continue
        out.append(PiiMatch("email", start, end, m.group()))
    return out


# --------------------------------------------------------------------------- phone

_CN_MOBILE = re.compile(
    r"1(?<![0-9A-Za-z_+]1)[3-9][0-9](?P<s>[ \-.]?)[0-9]{4}(?P=s)[0-9]{4}(?![0-9A-Za-z_])"
)
_CN_MOBILE_PREFIXED = re.compile(
    r"(?<![0-9A-Za-z_])(?:(?:\+|00)86[ \-.]?|\(\+?86\)[ \-.]?|86[ \-.]?)"
    r"1[3-9][0-9](?P<s>[ \-.]?)[0-9]{4}(?P=s)[0-9]{4}(?![0-9A-Za-z_])"
)
_CN_LANDLINE = re.compile(
    r"(?:\(0(?<![0-9A-Za-z_]\(0)(?P<a1>[0-9]{2,3})\)[ \-]?"
    r"|0(?<![0-9A-Za-z_+]0)(?P<a2>[0-9]{2,3})[ \-])"
    r"(?P<local>[1-9][0-9]{2,3}[ \-]?[0-9]{4})(?:-[0-9]{1,5})?(?![0-9A-Za-z_])"
)
_NANP_PREFIXED = re.compile(
    r"(?<![0-9A-Za-z_+])\+?1(?P<p>[ \-.]?)(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}(?P=p))"
    r"[2-9][0-9]{2}[\-. ][0-9]{4}(?![0-9A-Za-z_])"
)
_NANP = re.compile(
    r"(?<![0-9A-Za-z_])(?:\([2-9][0-9]{2}\)[ ]?[2-9][0-9]{2}[\-. ][0-9]{4}"
    r"|[2-9][0-9]{2}(?P<s>[\-.])[2-9][0-9]{2}(?P=s)[0-9]{4})(?![0-9A-Za-z_])"
)
_INTL = re.compile(
    r"\+(?<![0-9A-Za-z_+]\+)[1-9][0-9]{0,3}(?:[ \-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}"
    r"(?![0-9A-Za-z_])"
)
_INTL_GROUP = re.compile(r"[ \-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})$")


def _landline_ok(m: re.Match[str]) -> bool:
    """Area codes 010 and 02x take 8-digit numbers, the other (4-digit) ones 7 or 8."""
    area = m.group("a1") or m.group("a2")
    local = len(_digits(m.group("local")))
    if area[0] in "12":
        return len(area) == 2 and local == 8
    return len(area) == 3 and local in (7, 8)


def _intl_trim(value: str) -> str | None:
    """Drop trailing groups until the number has at most 15 digits; None if too short."""
    while len(_digits(value)) > 15:
        m = _INTL_GROUP.search(value)
        if m is None or m.start() == 0:
            return None
        value = value[: m.start()]
    return value if len(_digits(value)) >= 8 else None


def _find_phone(text: str) -> list[PiiMatch]:
    """Phone candidates in ``text``; overlapping ones are left to :func:`_resolve`."""
    out = []
    patterns = (_CN_MOBILE, _CN_MOBILE_PREFIXED, _CN_LANDLINE, _NANP_PREFIXED, _NANP)
    for pattern in patterns if _HAS_RUN3(text) else ():
        for m in pattern.finditer(text):
            start, end = m.span()
            if pattern is _CN_LANDLINE and not _landline_ok(m):
                continue
            if _glued(text, start, end) or _neg_number_context(text, start):
                continue
            out.append(PiiMatch("phone", start, end, m.group()))
    if "+" in text:
        for m in _INTL.finditer(text):
            value = _intl_trim(m.group())
            if value is None:
                continue
            start = m.start()
            end = start + len(value)
            if _glued(text, start, end):
                continue
            out.append(PiiMatch("phone", start, end, value))
    return out


# --------------------------------------------------------------------------- cn_id

_CN_ID = re.compile(
    r"[1-8](?<![0-9_][1-8])[0-9]{5}(?P<s>[ \-]?)(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
    r"(?:0[1-9]|[12][0-9]|3[01])(?P=s)[0-9]{3}[0-9Xx](?![0-9A-Za-z_])"
)
_CN_ID15 = re.compile(
    r"[1-8](?<![0-9A-Za-z_][1-8])[0-9]{5}[0-9]{2}(?:0[1-9]|1[0-2])"
    r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}(?![0-9A-Za-z_])"
)
_CN_ID15_CONTEXT = re.compile(
    r"身份证|证件|(?<![A-Za-z])(?:id\s*card|identity|id\s*no|id\s*number|national\s*id)",
    re.IGNORECASE,
)
# Province-level codes: 11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71 (Taiwan), 81-83
# (Hong Kong, Macau, Taiwan residence permits).
_PROVINCE = re.compile(r"1[1-5]|2[1-3]|3[1-7]|4[1-6]|5[0-4]|6[1-5]|71|8[1-3]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _valid_date(year: int, month: int, day: int) -> bool:
    """True for a real calendar date between 1900-01-01 and today."""
    try:
        born = _dt.date(year, month, day)
    except ValueError:
        return False
    return _dt.date(1900, 1, 1) <= born <= _dt.date.today()


def _cn_id_ok(chars: str) -> bool:
    """True for an 18-character resident ID with a real birth date and a valid checksum."""
    if len(chars) != 18 or not _PROVINCE.fullmatch(chars, 0, 2):
        return False
    if not _valid_date(int(chars[6:10]), int(chars[10:12]), int(chars[12:14])):
        return False
    total = sum(int(c) * w for c, w in zip(chars[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == chars[17].upper()


def _find_cn_id(text: str) -> list[PiiMatch]:
    """Resident IDs in ``text``: validated 18-character ones, legacy 15-digit in context."""
    out: list[PiiMatch] = []
    if not _HAS_RUN4(text):
        return out
    for m in _CN_ID.finditer(text):
        if _cn_id_ok(m.group().replace(" ", "").replace("-", "")):
            out.append(PiiMatch("cn_id", m.start(), m.end(), m.group()))
    for m in _CN_ID15.finditer(text):
        chars = m.group()
        if not _PROVINCE.fullmatch(chars, 0, 2):
            continue
        if not _valid_date(1900 + int(chars[6:8]), int(chars[8:10]), int(chars[10:12])):
            continue
        if _CN_ID15_CONTEXT.search(text, max(0, m.start() - 24), m.end() + 12):
            out.append(PiiMatch("cn_id", m.start(), m.end(), chars))
    return out


# --------------------------------------------------------------------------- bank_card

_CARD_PLAIN = re.compile(r"[0-9](?<![0-9A-Za-z_][0-9])[0-9]{12,18}(?![0-9A-Za-z_])")
_CARD_GROUPED = re.compile(
    r"[0-9](?<![0-9A-Za-z_][0-9])[0-9]{3}(?P<s>[ \-.])[0-9]{4}(?:(?P=s)[0-9]{4}){1,3}"
    r"(?:(?P=s)[0-9]{1,3})?(?![0-9A-Za-z_])"
)
_CARD_AMEX = re.compile(
    r"3(?<![0-9A-Za-z_]3)[0-9]{3}(?P<s>[ \-])[0-9]{6}(?P=s)[0-9]{4,5}(?![0-9A-Za-z_])"
)


def _luhn_ok(digits: str) -> bool:
    """True when ``digits`` passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """True when ``digits`` has an issuer prefix in use and a length that issuer uses."""
    n = len(digits)
    first, two, four = digits[0], int(digits[:2]), int(digits[:4])
    if first == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return n == 16
    if two in (34, 37):  # Amex
        return n == 15
    if two in (30, 36, 38):  # Diners Club
        return 14 <= n <= 19
    if 3528 <= four <= 3589:  # JCB
        return 16 <= n <= 19
    if first == "6" or two in (50, 56, 57, 58):  # UnionPay, Discover, Maestro
        return 16 <= n <= 19
    return False


def _card_ok(digits: str) -> bool:
    """True for a plausible card number: length, issuer prefix, Luhn, and not an ID."""
    return (
        13 <= len(digits) <= 19
        and _card_prefix_ok(digits)
        and _luhn_ok(digits)
        and not (len(digits) == 18 and _cn_id_ok(digits))
    )


def _find_bank_card(text: str) -> list[PiiMatch]:
    """Card numbers in ``text``, plain or grouped, outside order/serial contexts."""
    out: list[PiiMatch] = []
    if not _HAS_RUN4(text):
        return out
    for pattern in (_CARD_PLAIN, _CARD_GROUPED, _CARD_AMEX):
        for m in pattern.finditer(text):
            start, end = m.span()
            if not _card_ok(_digits(m.group())):
                continue
            if _glued(text, start, end) or _neg_number_context(text, start):
                continue
            out.append(PiiMatch("bank_card", start, end, m.group()))
    return out


# --------------------------------------------------------------------------- ip

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![0-9A-Za-z_.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])")
_HAS_DOTTED_DIGITS = re.compile(r"[0-9]\.[0-9]").search
# A version word right before (or after) a dotted quad makes it a version.
_VERSION_NEAR = re.compile(
    r"(?:(?<![A-Za-z])(?:version|ver\.?|v|build|release|firmware|rev|sdk|api|kernel|driver|"
    r"patch|section)|版本号?|固件|内核|补丁|驱动|第|§|[A-Za-z]/)\s*[:：=]?\s*$",
    re.IGNORECASE,
)
_VERSION_AFTER = re.compile(r"\s*(?:版本|版|节|章|release|build)", re.IGNORECASE)
# A network word right before a dotted quad makes it an address whatever else is near.
_IP_NEAR = re.compile(
    r"(?:(?<![A-Za-z])(?:ips?|ipv4|addr|address|host|server|client|from|src|dst|source|"
    r"remote|peer|proxy|gateway|dns|via|ping|origin|allow|deny|block(?:ed)?)|地址|服务器|"
    r"网关|来源|从|访问)\s*[:：=]?\s*$",
    re.IGNORECASE,
)
# Version-ish words anywhere shortly before: "CUDA 12.2, cuDNN 8.9.4.25".
_VERSION_WIDE = re.compile(
    r"(?<![A-Za-z])(?:version|build|firmware|release|driver|sdk|cuda|cudnn|kernel|patch)|"
    r"版本|固件|驱动|内核|补丁",
    re.IGNORECASE,
)


def _version_like(text: str, start: int, end: int) -> bool:
    """True when the dotted quad at ``text[start:end]`` reads as a version number."""
    if _VERSION_NEAR.search(text, max(0, start - 12), start) or _VERSION_AFTER.match(text, end):
        return True
    if _IP_NEAR.search(text, max(0, start - 12), start):
        return False
    return _VERSION_WIDE.search(text, max(0, start - 40), start) is not None


_IPV6_CANDIDATE = re.compile(
    r"[0-9A-Fa-f:](?<![0-9A-Za-z_:.][0-9A-Fa-f:])"
    r"(?:(?<=:)(?=:)|(?=[0-9A-Fa-f:]*::)|(?=[0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{1,4}:){6}))"
    r"[0-9A-Fa-f:]{0,44}(?:\.[0-9]{1,3}){0,3}(?![0-9A-Za-z_])"
)


def _find_ip(text: str) -> list[PiiMatch]:
    """IPv4 addresses that do not read as versions, and valid IPv6 addresses."""
    out = []
    if _HAS_DOTTED_DIGITS(text):
        for m in _IPV4.finditer(text):
            start, end = m.span()
            if not _version_like(text, start, end):
                out.append(PiiMatch("ip", start, end, m.group()))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_CANDIDATE.finditer(text):
            value = m.group()
            if value.endswith(":") and not value.endswith("::"):
                value = value[:-1]
            if not any(ch.isdigit() for ch in value):
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            out.append(PiiMatch("ip", m.start(), m.start() + len(value), value))
    return out


# --------------------------------------------------------------------------- url_secret

# URL characters: no spaces, quotes, brackets or CJK/full-width punctuation; raw CJK
# letters are allowed (query=北京&key=...), but a secret value is ASCII only.
_URL_CHARS = r"[^\s<>\"'`\u3000-\u303f\uff00-\uffef]"
_URL = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.\-]{1,15}://"
    r"|(?<![A-Za-z0-9_.\-])www\."
    r"|(?<![A-Za-z0-9_./:\-])/"
    r"|(?<![A-Za-z0-9_.\-@])[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?::[0-9]+)?/)"
    rf"{_URL_CHARS}*"
)
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?:([^\s:/?#@]+):|:)([^\s/?#]+)@")
_PARAM = re.compile(
    r"[?&#;]([A-Za-z_][A-Za-z0-9_.\-\[\]]{0,40})=([^\x00-\x20&#;?\"'<>`\x7f-\uffff]+)"
)
_SECRET_NAMES = frozenset(
    {
        "token", "access_token", "accesstoken", "refresh_token", "id_token", "auth_token",
        "api_token", "apitoken", "api_key", "apikey", "api-key", "key", "access_key",
        "accesskey", "secret", "client_secret", "app_secret", "secret_key", "secretkey",
        "password", "passwd", "pwd", "pass", "sig", "signature", "auth", "authorization",
        "session", "session_id", "sessionid", "sid", "jsessionid", "phpsessid", "code", "sign",
        "auth_code", "authcode", "private_key", "x-amz-credential",
    }
)  # fmt: skip
_SECRET_SUFFIXES = frozenset(
    {"token", "secret", "password", "passwd", "pwd", "signature", "sig", "apikey",
     "sessionid", "sessid", "key"}
)  # fmt: skip
# "key" as a suffix only counts after these qualifiers (api_key yes, sort_key no).
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "app", "client", "auth"})
_PLACEHOLDER = re.compile(
    r"(?:<[^>]*>|\{[^}]*\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%s|x{3,}|\*{3,}|\.{3,}|"
    r"(?:your|my)[_\-]?[A-Za-z_\-]*|redacted|\[redacted\]|null|none|undefined|true|false|"
    r"value|string|example|placeholder|changeme|password|passwd|pass|pwd|secret|token)",
    re.IGNORECASE,
)
_BARE_SECRET = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:sk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"
    r"|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|(?<=[Bb]earer )[A-Za-z0-9_.~+/\-]{16,}=*)"
    r"(?![A-Za-z0-9_\-])"
)
_BARE_HINTS = ("sk-", "_", "AKIA", "xox", "AIza", "eyJ", "earer ")
_URL_TRAILING = ".,;:?)]}'\""


def _secret_name(name: str) -> bool:
    """True when a URL parameter called ``name`` carries a credential."""
    low = name.lower()
    if low in _SECRET_NAMES:
        return True
    parts = [p for p in re.split(r"[_.\-\[\]]", low) if p]
    if len(parts) < 2 or parts[-1] not in _SECRET_SUFFIXES:
        return False
    return parts[-1] != "key" or parts[-2] in _KEY_QUALIFIERS


def _secret_value_ok(value: str) -> bool:
    """True when ``value`` looks like a real secret, not a short flag or a placeholder."""
    return len(value) >= 4 and _PLACEHOLDER.fullmatch(value) is None


def _find_url_secret(text: str) -> list[PiiMatch]:
    """Secret URL parameter values, URL userinfo credentials and well-known tokens."""
    out = []
    # A secret parameter needs "=" and a URL needs "/" (or "www."); userinfo needs "@".
    if ("=" in text or "@" in text) and ("/" in text or "www." in text):
        for url in _URL.finditer(text):
            token = url.group().rstrip(_URL_TRAILING)
            base = url.start()
            ui = _USERINFO.match(token)
            if ui is not None and _secret_value_ok(ui.group(2)):
                # "user:pass" when there is a user name, else just the password.
                first = 1 if ui.group(1) is not None else 2
                start, end = base + ui.start(first), base + ui.end(2)
                out.append(PiiMatch("url_secret", start, end, text[start:end]))
            for p in _PARAM.finditer(token):
                value = p.group(2).rstrip(_URL_TRAILING)
                if _secret_name(p.group(1)) and _secret_value_ok(value):
                    start = base + p.start(2)
                    out.append(PiiMatch("url_secret", start, start + len(value), value))
    if any(hint in text for hint in _BARE_HINTS):
        for m in _BARE_SECRET.finditer(text):
            out.append(PiiMatch("url_secret", m.start(), m.end(), m.group()))
    return out


# --------------------------------------------------------------------------- engine

_DETECTORS: dict[str, Callable[[str], list[PiiMatch]]] = {
    "email": _find_email,
    "phone": _find_phone,
    "cn_id": _find_cn_id,
    "bank_card": _find_bank_card,
    "ip": _find_ip,
    "url_secret": _find_url_secret,
}
_DIGIT_TYPES = frozenset({"phone", "cn_id", "bank_card", "ip"})
_ALL_BY_PRIORITY = tuple(sorted(PII_TYPES, key=_PRIORITY.__getitem__))
_TYPES_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}


def _check_types(types: Iterable[str]) -> tuple[str, ...]:
    """Validate ``types`` and return them in priority order, without duplicates."""
    if types is PII_TYPES:
        return _ALL_BY_PRIORITY
    if isinstance(types, str):
        types = (types,)
    key = tuple(types)
    try:
        cached = _TYPES_CACHE.get(key)
    except TypeError:  # unhashable items: validated (and rejected) below
        cached = None
    if cached is not None:
        return cached
    wanted = set()
    for kind in key:
        if kind not in _PRIORITY:
            raise RecipeError(f"PII type must be one of {', '.join(PII_TYPES)}, got {kind!r}")
        wanted.add(kind)
    result = tuple(sorted(wanted, key=_PRIORITY.__getitem__))
    if len(_TYPES_CACHE) < 256:  # bounded: callers pass a handful of distinct lists
        _TYPES_CACHE[key] = result
    return result


def _resolve(candidates: list[PiiMatch]) -> list[PiiMatch]:
    """Keep the best non-overlapping candidates (priority, then earliest and longest)."""
    if len(candidates) <= 1:
        return candidates
    candidates.sort(key=lambda m: (_PRIORITY[m.type], m.start, m.start - m.end))
    kept: list[PiiMatch] = []
    for cand in candidates:
        if all(cand.end <= k.start or cand.start >= k.end for k in kept):
            kept.append(cand)
    kept.sort(key=lambda m: m.start)
    return kept


def find_pii(text: str, types: Iterable[str] = PII_TYPES) -> list[PiiMatch]:
    """Return the PII in ``text`` as sorted, non-overlapping matches.

    ``types`` limits the search to some of :data:`PII_TYPES`; an unknown name raises
    :class:`~aiflywheel.errors.RecipeError`.
    """
    return _find(text, _check_types(types))


def _find(text: str, wanted: tuple[str, ...]) -> list[PiiMatch]:
    """Run the detectors of ``wanted`` (validated, in priority order) over ``text``.

    A text with format characters or compatibility forms is searched in its normalized
    views (see :func:`normalized_views`); the matches are mapped back to spans of
    ``text`` (so a format character inside a number is inside the match)."""
    if not text or not wanted:
        return []
    views = normalized_views(text)
    if not views:
        return _resolve(_detect(text, wanted))
    candidates: set[PiiMatch] = set()
    for view, origin in views:
        for m in _detect(view, wanted):
            start, end = origin[m.start], origin[m.end - 1] + 1
            candidates.add(PiiMatch(m.type, start, end, text[start:end]))
    return _resolve(list(candidates))


def _detect(text: str, wanted: tuple[str, ...]) -> list[PiiMatch]:
    """The candidates of every detector of ``wanted`` in ``text`` (overlaps not resolved)."""
    has_digit = _HAS_DIGIT(text) is not None
    candidates: list[PiiMatch] = []
    for kind in wanted:
        if kind in _DIGIT_TYPES and not has_digit:
            continue
        candidates.extend(_DETECTORS[kind](text))
    return candidates


# --------------------------------------------------------------------------- normalizing

# Format characters (Unicode category Cf: zero-width, bidi marks, embeddings, overrides
# and isolates, word joiner, BOM, tag characters) are invisible: written inside a number
# or an address (138\\u200e1234\\u200e5678) they hide it from a regex but not from a reader.
# The whole tag block U+E0000..U+E007F counts, assigned or not.
_FORMAT_CHARS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f"
)
# Compatibility forms that NFKC folds to ASCII and that can write PII: full-width digits
# and letters (１３８, ａ) and the full-width ( ) + - . @ _ (not the full-width comma or
# colon: Chinese punctuation ends a number or URL as it is), no-break and typographic
# spaces, the ideographic space, mathematical digits.
_COMPAT_CHARS = (
    "\u00a0\u2000-\u200a\u202f\u205f\u3000\uff08\uff09\uff0b\uff0d\uff0e\uff10-\uff19"
    "\uff20-\uff3a\uff3f\uff41-\uff5a\U0001d7ce-\U0001d7ff"
)
_IS_FORMAT = re.compile(f"[{_FORMAT_CHARS}]")
_NEEDS_NORMALIZING = re.compile(f"[{_FORMAT_CHARS}{_COMPAT_CHARS}]")
_FOLDED: dict[str, str] = {}


def _fold(ch: str) -> str:
    """A compatibility character as NFKC writes it (one ASCII character here)."""
    folded = _FOLDED.get(ch)
    if folded is None:
        folded = unicodedata.normalize("NFKC", ch)
        if len(folded) != 1:
            folded = ch
        _FOLDED[ch] = folded
    return folded


def normalized_views(text: str) -> list[tuple[str, list[int]]]:
    """The views of ``text`` the detectors search, each with the index in ``text`` of
    every character of the view (plus one past the end); ``[]`` when ``text`` needs none.

    Compatibility forms are folded as NFKC folds them (full-width ``１３８`` → ``138``).
    Format characters are dropped in one view (so ``138\\u200e1234\\u200e5678`` reads
    ``13812345678``) and read as a space in another (so ``tel\\u200b13812345678`` is not
    a number glued to a word); the second view is made only when there are any.
    """
    if _NEEDS_NORMALIZING.search(text) is None:
        return []
    has_format = _IS_FORMAT.search(text) is not None
    replacements = ("", " ") if has_format else ("",)
    views = []
    for format_as in replacements:
        parts: list[str] = []
        origin: list[int] = []
        pos = 0
        for m in _NEEDS_NORMALIZING.finditer(text):
            at = m.start()
            parts.append(text[pos:at])
            origin.extend(range(pos, at))
            ch = m.group()
            folded = format_as if _IS_FORMAT.match(ch) else _fold(ch)
            parts.append(folded)
            origin.extend([at] * len(folded))
            pos = at + 1
        parts.append(text[pos:])
        origin.extend(range(pos, len(text) + 1))
        views.append(("".join(parts), origin))
    return views


# --------------------------------------------------------------------------- masking


def _mask_chars(value: str, keep_head: int, keep_tail: int, pred: Callable[[str], bool]) -> str:
    """Replace the characters selected by ``pred`` with ``*``, keeping head and tail."""
    positions = [i for i, ch in enumerate(value) if pred(ch)]
    hidden = set(positions[keep_head : max(keep_head, len(positions) - keep_tail)])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(value))


def _mask_phone(value: str) -> str:
    """Keep the country code, the first 3 digits (or the area code) and the last 4."""
    digits = _digits(value)
    stripped = value.lstrip("(")
    head = 3
    if stripped.startswith(("+", "00")):
        rest = stripped[1:] if stripped.startswith("+") else stripped[2:]
        group = re.match(r"[0-9]+", rest)
        cc_len = len(group.group()) if group else 0
        if cc_len > 3:  # no separator after the country code: guess it
            cc_len = 2 if digits.startswith(("86", "0086")) else 1 if rest[0] == "1" else 2
        if stripped.startswith("00"):
            cc_len += 2
        head = cc_len + 3
    elif digits.startswith("86") and len(digits) == 13:
        head = 5
    elif re.match(r"1[ \-.(]", stripped):  # 1-800-555-0199, 1 (800) 555-0123
        head = 4
    elif digits.startswith("0"):
        group = re.match(r"[0-9]+", stripped)
        head = len(group.group()) if group and len(group.group()) <= 4 else 4
    return _mask_chars(value, head, 4, str.isdigit)


def _mask_email(value: str) -> str:
    """Keep the first character of the local part and the whole domain."""
    local, _, domain = value.rpartition("@")
    return f"{local[0]}***@{domain}"


def _mask_ip(value: str) -> str:
    """Keep the network half: two IPv4 octets or two IPv6 groups."""
    if "." in value and ":" not in value:
        parts = value.split(".")
        return f"{parts[0]}.{parts[1]}.*.*"
    groups = [g.lstrip("0") or "0" for g in ipaddress.IPv6Address(value).exploded.split(":")]
    return ":".join(groups[:2] + ["*"] * 6)


def _mask(match: PiiMatch) -> str:
    """The partial mask of one match (see :func:`redact_text`)."""
    value = match.value
    if match.type == "phone":
        return _mask_phone(value)
    if match.type == "email":
        return _mask_email(value)
    if match.type == "cn_id":
        return _mask_chars(value, 6, 4, str.isalnum)
    if match.type == "bank_card":
        return _mask_chars(value, 0, 4, str.isdigit)
    if match.type == "ip":
        return _mask_ip(value)
    return "****"


def redact_text(text: str, matches: Sequence[PiiMatch], mode: str) -> str:
    """Replace every match in ``text``: typed placeholders (``redact``) or partial masks.

    Masks keep enough to recognise the value: phone ``138****5678``, e-mail
    ``z***@qq.com``, ID first 6 + ``********`` + last 4, card ``************1234``
    (separators kept), IP ``192.168.*.*``, secret ``****``. ``matches`` must come from
    :func:`find_pii` on the same text (sorted or not, but non-overlapping); a match
    whose value is not at its span, or overlapping another, raises ``ValueError``.
    """
    if mode not in REDACT_MODES:
        raise RecipeError(
            f"PII redaction mode must be one of {', '.join(REDACT_MODES)}, got {mode!r}"
        )
    parts: list[str] = []
    pos = 0
    for match in sorted(matches, key=lambda m: m.start):
        if match.type not in PLACEHOLDERS:
            raise RecipeError(f"PII type must be one of {', '.join(PII_TYPES)}, got {match.type!r}")
        if match.start < pos:
            raise ValueError(f"PII matches overlap at {match.start}: {match!r}")
        if text[match.start : match.end] != match.value:
            raise ValueError(f"PII match {match!r} does not lie at its span in the text")
        parts.append(text[pos : match.start])
        parts.append(PLACEHOLDERS[match.type] if mode == "redact" else _mask(match))
        pos = match.end
    parts.append(text[pos:])
    return "".join(parts)


def scrub(
    text: str, *, mode: str = "redact", types: Iterable[str] = PII_TYPES
) -> tuple[str, list[PiiMatch]]:
    """Find PII in ``text`` and handle it according to ``mode``.

    ``redact`` puts typed placeholders in place of each match, ``mask`` hides most of
    each value, ``off`` returns the text unchanged with no matches (nothing is
    scanned), and ``drop_row`` returns the text unchanged with its matches so that the
    caller can drop the row when there are any.
    """
    if mode not in SCRUB_MODES:
        raise RecipeError(f"PII mode must be one of {', '.join(SCRUB_MODES)}, got {mode!r}")
    wanted = _check_types(types)
    if mode == "off":
        return text, []
    matches = _find(text, wanted)
    if mode == "drop_row" or not matches:
        return text, matches
    return redact_text(text, matches, mode), matches
