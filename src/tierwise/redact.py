"""Redaction before storage: ``store.redact: module:function`` names a callable (``str -> str``) that every
prompt and answer goes through before a record keeps it (with ``store.prompts: full``).

``emails_and_numbers`` is the built-in one: e-mail addresses, card numbers (13 to 19 digits, spaces or dashes
allowed between them, passing the Luhn check) and phone numbers (7 to 15 digits, written with a leading ``+``
or with spaces, dashes or brackets between groups) become ``[email]``, ``[card]`` and ``[phone]``. Digit runs
without those marks (order numbers, timestamps), dotted numbers (versions, IP addresses, decimals), dates and
year ranges stay.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

Redactor = Callable[[str], str]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A digit run that may hold single spaces or dashes between its digits; a card if the Luhn check passes.
_CARD = re.compile(r"(?<![\w+.])\d(?:[ -]?\d){12,18}(?![\w]|\.\d)")
# Digit groups joined by single spaces or dashes, with an optional leading + and bracketed groups; never next
# to a dot and a digit (versions, IP addresses, decimals) or a word character.
_PHONE = re.compile(
    r"(?<![\w+.)-])(?:\+\s?)?(?:\(\d{1,5}\)[ -]?)?\d(?:[ -]?\d|[ -]?\(\d{1,5}\)[ -]?\d)*(?![\w]|\.\d|-\d)"
)
# Dates and year ranges look like phone numbers to the pattern above; they stay.
_DATE = re.compile(
    r"\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}[-/]\d{1,2}[-/]\d{2,4}|(?:1[89]|20)\d\d ?- ?(?:1[89]|20)\d\d"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    found = match.group()
    return "[card]" if _luhn("".join(c for c in found if c.isdigit())) else found


def _phone(match: re.Match[str]) -> str:
    found = match.group()
    digits = sum(c.isdigit() for c in found)
    marked = found.startswith("+") or any(c in " -()" for c in found)
    return "[phone]" if 7 <= digits <= 15 and marked and not _DATE.fullmatch(found) else found


def emails_and_numbers(text: str) -> str:
    """``text`` with e-mail addresses, card numbers and phone numbers masked."""
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def load_redactor(path: str) -> Redactor:
    """The callable ``module:function`` names; raises ValueError saying what is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:function (e.g. tierwise.redact:emails_and_numbers), got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc.__class__.__name__}: {exc})") from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise ValueError(f"{path} is a {type(target).__name__}, not a function taking and returning a string")
    fn: Redactor = target
    return fn
