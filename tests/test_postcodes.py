"""Postcodes: normalising, the GOV.UK format check, and lookups in the real ONS directory."""

from __future__ import annotations

import importlib.metadata
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.reference.postcodes import PACKAGE, Directory, is_valid, normalise
from gateway.rules import LONDON

# The spec's pattern, written out again here so the test does not read it from the code under test.
SPEC_PATTERN = re.compile(
    r"^(?:GIR 0AA|(?:[A-Z][0-9]{1,2}|[A-Z][A-HJ-Y][0-9]{1,2}|[A-Z][0-9][A-Z]|[A-Z][A-HJ-Y][0-9]?[A-Z]) [0-9][A-Z]{2})$"
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("n1 1aa", "N1 1AA"),
        ("N11AA", "N1 1AA"),
        ("  sw1a1aa ", "SW1A 1AA"),
        ("S W 1 A 1 A A", "SW1A 1AA"),
        ("ec1a\t1bb", "EC1A 1BB"),
        ("cf10\n1aa", "CF10 1AA"),
        ("W1M  0AA", "W1M 0AA"),
        ("gir0aa", "GIR 0AA"),
        ("", ""),
        (None, ""),
        ("n1", "N1"),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "postcode",
    ["N1 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "W1A 0AX", "EC1A 1BB", "SW1A 1AA", "CF10 1AA", "GIR 0AA",
     "W1M 0AA"],  # W1M 0AA is real and fails the stricter letter-position rules the spec warns against
)
def test_valid_formats(postcode):
    assert is_valid(postcode)


@pytest.mark.parametrize(
    "postcode",
    ["N1 1A", "N1 1AAA", "N11AA", "n1 1aa", "1N1 1AA", "NI1 1AA", "NZ1 1AA", "N1 AAA", "N123 1AA", "N1  1AA",
     " N1 1AA", "N1 1AA ", "GIR 0AB", "", "ZZZ 1AA"],
)
def test_invalid_formats(postcode):
    assert not is_valid(postcode)


outward = st.one_of(
    st.from_regex(r"\A[A-Z][0-9]{1,2}\Z"),
    st.from_regex(r"\A[A-Z][A-HJ-Y][0-9]{1,2}\Z"),
    st.from_regex(r"\A[A-Z][0-9][A-Z]\Z"),
    st.from_regex(r"\A[A-Z][A-HJ-Y][0-9]?[A-Z]\Z"),
)
inward = st.from_regex(r"\A[0-9][A-Z]{2}\Z")


@given(outward, inward, st.lists(st.sampled_from([" ", "\t", "\n"]), max_size=3), st.booleans())
def test_any_well_formed_postcode_survives_untidy_typing(out, inn, spaces, lower):
    typed = "".join(spaces) + out + "".join(spaces) + inn + "".join(spaces)
    typed = typed.lower() if lower else typed
    assert normalise(typed) == f"{out} {inn}"
    assert is_valid(normalise(typed))


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ", max_size=10))
def test_is_valid_agrees_with_the_spec_pattern(text):
    assert is_valid(text) == bool(SPEC_PATTERN.match(text))


@given(st.text(max_size=12))
def test_normalise_is_idempotent(text):
    once = normalise(text)
    assert normalise(once) == once


@pytest.mark.parametrize(
    "postcode, code",
    [
        ("N1 1AA", "E09000019"),  # Islington
        ("NW1 2DB", "E09000007"),  # Camden
        ("E8 1DY", "E09000012"),  # Hackney
        ("SW1A 1AA", "E09000033"),  # Westminster
        ("M1 1AE", "E08000003"),  # Manchester
        ("CF10 1AA", "W06000015"),  # Cardiff
        ("BT1 1AA", "N09000003"),  # Belfast
    ],
)
def test_authority_of_real_postcodes(directory, postcode, code):
    assert directory.authority(postcode) == code


@pytest.mark.parametrize("postcode", ["GIR 0AA", "ZZ99 3VZ", "QQ1 1QQ", ""])
def test_no_authority(directory, postcode):
    # GIR 0AA is in the directory without an authority; ZZ99 pseudo-postcodes are absent.
    assert directory.authority(postcode) is None


def test_examples_are_real_postcodes_of_that_authority(directory):
    found = directory.examples("E09000019", 5)
    assert len(found) == 5
    assert len(set(found)) == 5
    for postcode in found:
        assert is_valid(postcode)
        assert normalise(postcode) == postcode
        assert directory.authority(postcode) == "E09000019"


def test_examples_of_an_unknown_authority(directory):
    assert directory.examples("E09999999", 3) == []


def test_every_london_borough_is_in_the_directory(directory):
    codes = directory.authorities()
    assert set(LONDON) <= codes
    assert "" not in codes


def test_edition_names_the_installed_release():
    edition = Directory().edition
    assert importlib.metadata.version(PACKAGE) in edition
    assert "ONS" in edition


def test_a_folder_without_data_knows_no_postcode(tmp_path):
    empty = Directory(tmp_path)
    assert empty.authority("N1 1AA") is None
    assert empty.examples("E09000019", 3) == []


def test_every_english_authority_in_the_directory_has_an_upper_tier_authority(directory):
    """The 2021 ONS lookup plus authorities.SINCE_2021 covers every English code the directory answers with
    (the directory already gives Carlisle, Harrogate and Taunton their 2023 unitaries)."""
    from gateway.reference import authorities

    lookup = authorities.load()
    english = {code for code in directory.authorities() if code.startswith("E")}
    assert {code: lookup.upper_tier(code) for code in english if not lookup.upper_tier(code)} == {}
    assert all(lookup.is_upper_tier(lookup.upper_tier(code)) for code in english)
    assert [directory.authority(p) for p in ("CA3 8JH", "HG1 1AA", "TA1 1DA")] == ["E06000063", "E06000065", "E06000066"]
    assert lookup.label(lookup.upper_tier("E07000110")) == "Kent (E10000016)"


def test_the_compact_cache_answers_as_the_shipped_files_do(tmp_path, directory):
    """Built once per edition from the shipped files, one small file per district; a damaged one is rebuilt."""
    from gateway.reference.postcodes import Directory

    letters = Directory(cache=tmp_path / "unused")

    class Shipped:  # the shipped file of each letter, read whole: what the cache must answer as
        @staticmethod
        def authority(postcode):
            compact = postcode.replace(" ", "")
            return letters._letter(compact[0]).get(compact) or None if len(compact) >= 5 else None

    shipped = Shipped()
    cached = Directory(cache=tmp_path)
    asked = ["N1 1AA", "NW1 2DB", "E8 1DY", "QQ1 1QQ", "GIR 0AA", "N1 9ZZ", "M1 1AE", "LS1 4DY", "N1", ""]
    asked += directory.examples("E09000019", 50) + directory.examples("E08000035", 20, letters="L")
    assert [cached.authority(p) for p in asked] == [shipped.authority(p) for p in asked]
    assert (tmp_path / "N1.marshal").is_file() and (tmp_path / ".N-done").is_file()
    again = Directory(cache=tmp_path)  # a new process's view: from the cache alone
    assert [again.authority(p) for p in asked] == [shipped.authority(p) for p in asked]
    assert "N" not in again._letters  # the shipped file of the letter was not opened
    (tmp_path / "N1.marshal").write_bytes(b"not marshal data")
    assert Directory(cache=tmp_path).authority("N1 1AA") == "E09000019"
    assert Directory(cache=tmp_path).authority("N1 1AA") == "E09000019"  # and the file is whole again


def test_the_cache_is_built_in_a_child_and_only_the_districts_asked_for_are_held(tmp_path):
    """A gateway holding a large return does not hold a letter of the directory too: the letter is read and
    its cache written by a child process, and the gateway keeps the districts it looked up."""
    from gateway.reference.postcodes import Directory

    fresh = Directory(cache=tmp_path)
    assert fresh.authority("N1 1AA") == "E09000019" and fresh.authority("N16 0AA") == "E09000012"
    assert (tmp_path / ".N-done").is_file() and (tmp_path / "N7.marshal").is_file()
    assert fresh._letters == {} and set(fresh._districts) == {"N1", "N16"}



def test_prepare_writes_the_letters_a_return_needs_beside_the_caller(tmp_path):
    """examine() asks for a return's letters before checking its rows; lookups then wait for the writer."""
    from gateway.reference.postcodes import Directory

    ahead = Directory(cache=tmp_path)
    ahead.prepare(["n1 1aa", "E8 1DY", "", None, "12345", "E9 5AA"])
    assert ahead.authority("E8 1DY") == "E09000012" and ahead.authority("N1 1AA") == "E09000019"
    assert sorted(p.name for p in tmp_path.glob(".*-done")) == [".E-done", ".N-done"]
    assert ahead._letters == {} and set(ahead._districts) == {"E8", "N1"}
    ahead.prepare(["N7 6AA"])  # done already: nothing started
    assert ahead._building == {}
