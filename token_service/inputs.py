"""What a request's text may be, decided once for every surface (OAuth endpoints, hosted pages,
admin API, self-service, the Emporix layer, the CLI):

- text carries no control characters (C0, DEL, C1) and is valid Unicode: a NUL would otherwise
  reach PostgreSQL, which refuses it (DataError), and a lone surrogate its driver;
- numbers are ASCII digits only: `str.isdigit()` also accepts "²" and "①", which `int()` then
  refuses, and `int()` reads "٣" and "１" as 3 and 1;
- a JSON body is strict JSON (no member twice, no NaN), nested at most `MAX_JSON_DEPTH` deep
  (`parse_json`): never a RecursionError, always the surface's own 400;
- an email address is compared in one form (`normalize_email`), so that an address that only
  looks like another, or carries invisible characters, is never a second account beside it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

#: C0 controls, DEL and C1 controls (Unicode category Cc).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ASCII_DIGITS = re.compile(r"[0-9]+")

MAX_EMAIL_LENGTH = 320
MAX_LOCAL_PART_LENGTH = 64  # RFC 5321 §4.5.3.1.1
#: Unicode categories never part of an address: controls, format characters (U+200B ZERO WIDTH
#: SPACE, U+200D, U+FEFF, bidirectional marks...), surrogates, private use, unassigned, and
#: separators (spaces).
_NEVER_IN_EMAIL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
#: Scripts that may be mixed in one part of an address: UTS #39's "highly restrictive" level,
#: where Latin goes with the scripts of Chinese, Japanese and Korean writing.
_MIXABLE = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


#: Deeper than any body of any surface; a deeper one is refused before it is validated.
MAX_JSON_DEPTH = 32


class InvalidJson(ValueError):
    """A body that is not JSON this service reads; the message says why."""


class InvalidEmail(ValueError):
    """Not an address this service accepts; the message says why, fit for a person."""


def text_problem(value: str) -> str | None:
    """Why a string is unacceptable anywhere (path, query, form or body), or None if fine."""
    if CONTROL.search(value):
        return "must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode"
    return None


def ascii_int(value: str, max_digits: int = 10) -> int | None:
    """The number `value` spells in ASCII digits (at most `max_digits`), else None."""
    if len(value) > max_digits or not _ASCII_DIGITS.fullmatch(value):
        return None
    return int(value)


def parse_json(data: bytes | str) -> Any:
    """The JSON value of a request body, for every surface that takes JSON (each turns
    InvalidJson into its own 400). Strict: a member twice or NaN is ambiguous, not JSON."""
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidJson("The body is nested too deeply.") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise InvalidJson("The body is not valid JSON.") from None
    if isinstance(value, dict | list):
        _check_nesting(value)
    return value


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate member name")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _check_nesting(value: Any) -> None:
    """Refuse nesting beyond MAX_JSON_DEPTH, walking the value without recursion (text that
    is not Unicode, a lone surrogate, is each surface's validation's to refuse, per field)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_JSON_DEPTH:
            raise InvalidJson("The body is nested too deeply.")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def normalize_email(raw: str) -> str:
    """The one form of an email address, under which it is stored and looked up: NFKC (so
    "ａｌｉｃｅ" is "alice"), lower case, trimmed. Raises InvalidEmail for an address with
    invisible, control or space characters, whose local part or a domain label mixes scripts
    (a Cyrillic "а" among Latin letters), or that is not local@domain within RFC 5321's
    lengths."""
    email = unicodedata.normalize("NFKC", raw.strip()).lower()
    if any(unicodedata.category(c) in _NEVER_IN_EMAIL for c in email):
        raise InvalidEmail("an email address must not contain invisible or control characters")
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in local
        or len(local) > MAX_LOCAL_PART_LENGTH
        or len(email) > MAX_EMAIL_LENGTH
    ):
        raise InvalidEmail("a valid email is required")
    # The domain's labels each (an IDN label under ".com" is fine), the local part as a whole.
    if _mixes_scripts(local) or any(map(_mixes_scripts, domain.split("."))):
        raise InvalidEmail("an email address must not mix scripts (such as Latin and Cyrillic)")
    return email


def email_key(raw: str) -> str | None:
    """The normalized form of an address typed at a sign-in, or None if no account can have
    it (the caller then answers as for an unknown address)."""
    try:
        return normalize_email(raw)
    except InvalidEmail:
        return None


def _script(char: str) -> str | None:
    """The script of a letter, digit or mark, from its Unicode name (LATIN SMALL LETTER A,
    CYRILLIC SMALL LETTER A, CJK UNIFIED IDEOGRAPH-4E00); None for what every script shares
    (ASCII digits, punctuation, symbols)."""
    if char.isascii() and not char.isalpha():
        return None
    if unicodedata.category(char)[0] not in "LMN":
        return None
    name = unicodedata.name(char, "")
    word = name.split(" ", 1)[0]
    if word in ("CJK", "IDEOGRAPHIC"):
        return "HAN"
    if word in ("COMBINING", "KATAKANA-HIRAGANA"):  # shared by their neighbours' scripts
        return None
    return word or None


def _mixes_scripts(part: str) -> bool:
    scripts = {s for s in map(_script, part) if s is not None}
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _MIXABLE)
