"""The CCIS activity codes a return's "Destination if known" may hold, with their labels: the one table of them.

The codes and labels of the current activity list in the DfE's NCCIS management information requirement
(post-16 codes only: 110-150 are for young people below school-leaving age). validate.py checks a code
against it, the package writes the label beside the code, and the template lists it for providers.

A provider may give a destination as the code ("230"), the label ("Full-time education - further
education"), or both ("230 Full-time education - further education", as the template's dropdown offers it):
code_of reads all three as the code, whatever the case, spacing or dashes. Anything else stays free text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

GROUPS = (
    ("Education", (
        ("210", "Full-time education - school sixth form"),
        ("220", "Full-time education - sixth-form college"),
        ("230", "Full-time education - further education"),
        ("240", "Full-time education - higher education"),
        ("250", "Part-time education"),
        ("260", "Gap year student"),
        ("270", "Full-time education - other"),
        ("280", "Special post-16 institution"),
        ("290", "Custodial institution (juvenile offender)"),
    )),
    ("Employment", (
        ("310", "Apprenticeship"),
        ("320", "Full-time employment with study (regulated qualification)"),
        ("330", "Employment without training"),
        ("340", "Employment with training (other)"),
        ("350", "Temporary employment"),
        ("360", "Part-time employment"),
        ("380", "Self-employment"),
        ("381", "Self-employment combined with study (regulated qualification)"),
    )),
    ("Training", (
        ("410", "EFA/SFA funded work-based learning"),
        ("430", "Other training"),
        ("440", "DWP training and support programme"),
        ("450", "Traineeship"),
        ("460", "Supported internship"),
    )),
    ("Re-engagement", (
        ("530", "Re-engagement provision"),
    )),
    ("NEET", (
        ("540", "Working not for reward"),
        ("550", "Working not for reward combined with part-time study"),
        ("610", "Not yet ready for work or learning"),
        ("615", "Start date agreed (other)"),
        ("616", "Start date agreed (RPA compliant)"),
        ("619", "Seeking employment, education or training"),
        ("620", "Young carer"),
        ("630", "Teenage parent"),
        ("640", "Illness"),
        ("650", "Pregnancy"),
        ("660", "Religious grounds"),
        ("670", "Unlikely to be economically active"),
        ("680", "Other reason"),
    )),
    ("Other", (
        ("710", "Custody - young adult offender"),
        ("720", "Refugee or asylum seeker"),
    )),
    ("Not known", (
        ("810", "Current situation not known"),
        ("820", "Cannot be contacted"),
        ("830", "Refused to disclose activity"),
    )),
)

CODES: Mapping[str, str] = MappingProxyType({code: label for _, codes in GROUPS for code, label in codes})



def choice(code: str) -> str:
    """How the template's dropdown offers a code: "230 Full-time education - further education"."""
    return f"{code} {CODES[code]}"


_WORDS = re.compile(r"[^0-9a-z]+")


def _fold(text: str) -> str:
    """"  Full-Time education – FURTHER " -> "full time education further": the form destinations are compared in."""
    return _WORDS.sub(" ", text.casefold()).strip()


_LABELS = {code: f" {_fold(label)} " for code, label in CODES.items()}


def _within(words: str, code: str) -> bool:
    """Whether `words` (folded) are the code's label or whole words of it in order ("further education")."""
    return f" {words} " in _LABELS[code]


def code_of(text: str) -> str | None:
    """The CCIS code a destination cell names, or None for free text.

    "230", "230 Further education" (the code, then its label or words of it), "Full-time education - further
    education" (the whole label), or two or more words found in one label only ("further education").
    """
    words = _fold(text)
    code, _, rest = words.partition(" ")
    if code in CODES:
        return code if not rest or _within(rest, code) else None
    if not words:
        return None
    whole = [c for c in CODES if _LABELS[c] == f" {words} "]
    if whole:
        return whole[0]
    named = [c for c in CODES if _within(words, c)]
    return named[0] if len(named) == 1 and " " in words else None
