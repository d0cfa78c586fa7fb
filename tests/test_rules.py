"""rules/: boroughs and providers read into typed objects; each mistake names its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway import rules
from gateway.errors import RulesError

BOROUGHS = textwrap.dedent("""\
    # Boroughs
    [E09000019]
    name = "Islington"
    recipients = ["LDOR@Islington.example", "backup@islington.example"]
    format = "xlsx"

    [E09000012]
    recipients = ["ldor@hackney.example"]
    format = "csv"
    """)
PROVIDERS = textwrap.dedent("""\
    [10001234]
    name = "Example College"
    senders = ["mis@example-college.example", "@sixthform.example"]
    host_la = "E09000019"

    [10005678]
    name = "Other Academy"
    senders = ["Data@Other-Academy.example"]
    signing_keys = ["ABCD 1234 ef56"]
    require_signature = true
    """)


def folder(tmp_path: Path, boroughs: str = BOROUGHS, providers: str = PROVIDERS) -> Path:
    (tmp_path / "boroughs.toml").write_text(boroughs)
    (tmp_path / "providers.toml").write_text(providers)
    return tmp_path


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


def only_problem(path: Path):
    _, problems = rules.check(path)
    assert len(problems) == 1, problems
    with pytest.raises(RulesError) as caught:
        rules.load(path)
    assert str(problems[0]) in str(caught.value)
    return problems[0]


def test_good_rules(tmp_path):
    loaded = rules.load(folder(tmp_path))
    islington = loaded.boroughs["E09000019"]
    assert islington.name == "Islington"
    assert islington.recipients == ("ldor@islington.example", "backup@islington.example")
    assert islington.format == "xlsx"
    hackney = loaded.boroughs["E09000012"]
    assert hackney.name == "Hackney"  # from the ONS list when not given
    assert hackney.format == "csv"
    college = loaded.providers["10001234"]
    assert college.name == "Example College"
    assert college.host_la == "E09000019"
    assert college.require_signature is False
    academy = loaded.providers["10005678"]
    assert academy.senders == ("data@other-academy.example",)
    assert academy.signing_keys == ("ABCD1234EF56",)
    assert academy.require_signature is True
    assert loaded.recipients() == {"ldor@islington.example", "backup@islington.example", "ldor@hackney.example"}
    assert loaded.files == (tmp_path / "boroughs.toml", tmp_path / "providers.toml")


def test_the_shipped_rules_are_good():
    shipped = Path(__file__).resolve().parent.parent / "rules"
    loaded, problems = rules.check(shipped)
    assert problems == []
    assert set(loaded.boroughs) <= set(rules.LONDON)


@pytest.mark.parametrize(
    "address, ukprn",
    [
        ("mis@example-college.example", "10001234"),
        ("  MIS@Example-College.example ", "10001234"),
        ("head@sixthform.example", "10001234"),  # by "@domain"
        ("anyone@SIXTHFORM.example", "10001234"),
        ("data@other-academy.example", "10005678"),
        ("other@example-college.example", None),  # only one address of that domain is registered
        ("head@evil-sixthform.example", None),
        ("head@mail.sixthform.example", None),  # a sub-domain is another domain
        ("", None),
    ],
)
def test_provider_for_sender(tmp_path, address, ukprn):
    loaded = rules.load(folder(tmp_path))
    found = loaded.provider_for_sender(address)
    assert (found.ukprn if found else None) == ukprn


def test_unknown_borough_code(tmp_path):
    text = BOROUGHS.replace("[E09000012]", "[E09000034]")
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.file == tmp_path / "boroughs.toml"
    assert problem.line == line_of(text, "[E09000034]")
    assert "E09000001 to E09000033" in problem.message


def test_any_english_upper_tier_authority_can_have_a_table(tmp_path):
    """London boroughs, unitaries (the four made in 2023 too), metropolitan districts and counties: named from the ONS lookup."""
    text = BOROUGHS + "".join(f'\n[{code}]\nrecipients = ["ldor@{code.lower()}.example"]\n'
                              for code in ("E08000003", "E10000012", "E10000016", "E06000060", "E06000065"))
    loaded, problems = rules.check(folder(tmp_path, boroughs=text))
    assert problems == []
    assert {code: loaded.boroughs[code].name for code in ("E08000003", "E10000012", "E10000016", "E06000060", "E06000065")} == {
        "E08000003": "Manchester", "E10000012": "Essex", "E10000016": "Kent", "E06000060": "Buckinghamshire",
        "E06000065": "North Yorkshire"}


@pytest.mark.parametrize("code, says", [
    ("E07000110", "[E07000110] is Maidstone, a district: the duty to track its young people sits with Kent (E10000016), and its residents' rows go there; key the table [E10000016]"),
    ("E10000023", "[E10000023] is North Yorkshire, abolished in April 2023: its young people are now in North Yorkshire (E06000065)"),
    ("E07000165", "[E07000165] is the code Harrogate had until April 2023: its young people are now in North Yorkshire (E06000065); key the table [E06000065]"),
    ("W06000015", "[W06000015] is Cardiff, not an English upper-tier authority"),
    ("E10000099", "[E10000099] is not a known local authority code"),
])
def test_a_table_that_is_not_an_upper_tier_authority(tmp_path, code, says):
    text = BOROUGHS + f'\n[{code}]\nrecipients = ["ldor@somewhere.example"]\n'
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.line == line_of(text, f"[{code}]")
    assert says in problem.message


@pytest.mark.parametrize("table, suggested", [
    ('[E10000061]\nname = "Kent"\n', "did you mean [E10000016] (Kent)?"),  # by its name
    ('[E10000061]\nname = "Kent County Council"\n', "did you mean [E10000016] (Kent)?"),
    ('[E10000061]\n', "did you mean Kent (E10000016)?"),  # by the code, two digits swapped
    ('[E08000053]\nname = "Leeds Youth Service"\n', "did you mean Leeds (E08000035)?"),
])
def test_a_mistyped_code_is_answered_with_a_suggestion(tmp_path, table, suggested):
    text = BOROUGHS + "\n" + table + 'recipients = ["ldor@somewhere.example"]\n'
    assert suggested in only_problem(folder(tmp_path, boroughs=text)).message


def test_provider_without_senders(tmp_path):
    text = PROVIDERS.replace('senders = ["Data@Other-Academy.example"]\n', "")
    problem = only_problem(folder(tmp_path, providers=text))
    assert problem.file == tmp_path / "providers.toml"
    assert problem.line == line_of(text, "[10005678]")
    assert "no senders" in problem.message and "10005678" in problem.message


def test_provider_with_an_empty_sender_list(tmp_path):
    text = PROVIDERS.replace('senders = ["Data@Other-Academy.example"]', "senders = []")
    assert "no senders" in only_problem(folder(tmp_path, providers=text)).message


def test_sender_claimed_by_two_providers(tmp_path):
    text = PROVIDERS.replace('senders = ["Data@Other-Academy.example"]', 'senders = ["MIS@example-college.example"]')
    problem = only_problem(folder(tmp_path, providers=text))
    assert problem.file == tmp_path / "providers.toml"
    assert "mis@example-college.example" in problem.message
    assert "10001234" in problem.message and "10005678" in problem.message
    # The file can say where: the second claim, at its provider's table or its senders line.
    assert problem.line in (line_of(text, "[10005678]"), line_of(text, 'senders = ["MIS@example-college.example"]'))


def test_recipient_that_is_not_an_address(tmp_path):
    text = BOROUGHS.replace('recipients = ["ldor@hackney.example"]', 'recipients = ["ldor at hackney"]')
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.file == tmp_path / "boroughs.toml"
    assert problem.line == line_of(text, '"ldor at hackney"')
    assert "not an email address" in problem.message


def test_borough_without_recipients(tmp_path):
    text = BOROUGHS.replace('recipients = ["ldor@hackney.example"]\n', "")
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.line == line_of(text, "[E09000012]")
    assert "recipients" in problem.message


def test_bad_format(tmp_path):
    text = BOROUGHS.replace('format = "csv"', 'format = "xls"')
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.line == line_of(text, 'format = "xls"')
    assert "'xls'" in problem.message


def test_unknown_key_in_a_borough(tmp_path):
    text = BOROUGHS.replace('format = "csv"', 'formt = "csv"')
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.line == line_of(text, "formt")
    assert "did you mean 'format'" in problem.message


@pytest.mark.parametrize(
    "old, new, words, at",
    [
        ("[10005678]", "[1000567]", "not a UKPRN", "[1000567]"),
        ('senders = ["Data@Other-Academy.example"]', 'senders = ["data"]', "not an address or @domain", 'senders = ["data"]'),
        ('host_la = "E09000019"', 'host_la = "Islington"', "host_la", "host_la"),
        ("require_signature = true", 'require_signature = "yes"', "true or false", "require_signature"),
        ('name = "Other Academy"', 'name = ""', "needs a name", "[10005678]"),
    ],
)
def test_provider_mistakes(tmp_path, old, new, words, at):
    text = PROVIDERS.replace(old, new)
    problem = only_problem(folder(tmp_path, providers=text))
    assert problem.file == tmp_path / "providers.toml"
    assert words in problem.message
    assert problem.line == line_of(text, at if at.startswith(("[", "senders")) else f"{at} =")


def test_host_la_not_known(tmp_path):
    text = PROVIDERS.replace('host_la = "E09000019"', 'host_la = "E09000099"')
    problem = only_problem(folder(tmp_path, providers=text))
    assert problem.file == tmp_path / "providers.toml"
    assert "E09000099" in problem.message
    assert problem.line in (line_of(text, "[10001234]"), line_of(text, 'host_la = "E09000099"'))


def test_missing_file_and_load_raises(tmp_path):
    (tmp_path / "boroughs.toml").write_text(BOROUGHS)
    _, problems = rules.check(tmp_path)
    assert [(p.file, p.message) for p in problems] == [(tmp_path / "providers.toml", "file not found")]
    with pytest.raises(RulesError) as caught:
        rules.load(tmp_path)
    assert "providers.toml" in str(caught.value)


def test_every_problem_in_both_files_at_once(tmp_path):
    boroughs = BOROUGHS.replace('format = "csv"', 'format = "pdf"').replace("[E09000012]", "[E09000099]")
    providers = PROVIDERS.replace('senders = ["Data@Other-Academy.example"]', "senders = []")
    _, problems = rules.check(folder(tmp_path, boroughs, providers))
    assert sorted((p.file.name, p.line) for p in problems) == [
        ("boroughs.toml", line_of(boroughs, "[E09000099]")),
        ("providers.toml", line_of(providers, "[10005678]")),
    ]


# -- boroughs.toml: reasons and pinned keys ---------------------------------------------------------

FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def test_the_reasons_a_borough_takes(tmp_path):
    text = BOROUGHS.replace('format = "csv"', 'format = "csv"\nreasons = ["leaver", "At risk of dropping out"]')
    loaded = rules.load(folder(tmp_path, boroughs=text))
    hackney = loaded.boroughs["E09000012"]
    assert hackney.reasons == ("Leaver", "At risk")
    assert hackney.takes("Leaver") and not hackney.takes("Joiner")
    assert loaded.boroughs["E09000019"].reasons == ("Joiner", "Leaver", "At risk")  # all, when not said


def test_the_reason_words_are_the_validators(tmp_path):
    from gateway.rules import REASONS

    assert set(rules.REASONS) == set(REASONS)


@pytest.mark.parametrize(
    "reasons, words",
    [
        ('["Leavers"]', "'Leavers' is not a reason (did you mean \"Leaver\"?)"),
        ('["At-risk", "Joiner"]', "'At-risk' is not a reason (did you mean \"At risk\"?)"),
        ("[]", "reasons must list the notifications it takes"),
        ('"Leaver"', "reasons must list the notifications it takes"),
    ],
)
def test_reasons_mistakes(tmp_path, reasons, words):
    text = BOROUGHS.replace('format = "csv"', f"format = \"csv\"\nreasons = {reasons}")
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.file == tmp_path / "boroughs.toml"
    assert problem.line == line_of(text, "reasons =")
    assert words in problem.message and "[E09000012]" in problem.message


def test_pinned_keys(tmp_path):
    spaced = " ".join(FINGERPRINT[i:i + 4] for i in range(0, 40, 4)).lower()
    text = BOROUGHS.replace('format = "xlsx"', f'format = "xlsx"\nkeys = {{ "LDOR@islington.example" = "{spaced}" }}')
    loaded = rules.load(folder(tmp_path, boroughs=text))
    islington = loaded.boroughs["E09000019"]
    assert islington.pins == (("ldor@islington.example", FINGERPRINT),)
    assert islington.pins_line == line_of(text, "keys =")
    assert loaded.pins() == {"ldor@islington.example": FINGERPRINT}


def test_pinned_keys_as_a_table_of_their_own(tmp_path):
    text = BOROUGHS + f'\n[E09000019.keys]\n"backup@islington.example" = "{FINGERPRINT}"\n'
    loaded = rules.load(folder(tmp_path, boroughs=text))
    assert loaded.boroughs["E09000019"].pins == (("backup@islington.example", FINGERPRINT),)
    assert loaded.boroughs["E09000019"].pins_line == line_of(text, "[E09000019.keys]")


@pytest.mark.parametrize(
    "keys, words",
    [
        (f'{{ "ldor@camden.example" = "{FINGERPRINT}" }}', "ldor@camden.example is not one of its recipients"),
        ('{ "ldor@islington.example" = "0123 4567" }', "must be given by its full fingerprint"),
        (f'["{FINGERPRINT}"]', "keys must name each pinned key by its recipient"),
    ],
)
def test_pinned_key_mistakes(tmp_path, keys, words):
    text = BOROUGHS.replace('format = "xlsx"', f'format = "xlsx"\nkeys = {keys}')
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.file == tmp_path / "boroughs.toml"
    assert problem.line == line_of(text, "keys =")
    assert words in problem.message and "[E09000019]" in problem.message


def test_one_address_pinned_to_two_keys(tmp_path):
    other = "F" * 40
    text = (BOROUGHS.replace('format = "xlsx"', f'format = "xlsx"\nkeys = {{ "ldor@islington.example" = "{FINGERPRINT}" }}')
            + f'\n[E09000007]\nrecipients = ["ldor@islington.example"]\nkeys = {{ "ldor@islington.example" = "{other}" }}\n')
    problem = only_problem(folder(tmp_path, boroughs=text))
    assert problem.line == line_of(text, f'"{other}"')
    assert "one key pinned in [E09000019] and another in [E09000007]" in problem.message


def test_a_sub_regional_unit_listed_in_two_boroughs_is_fine(tmp_path):
    text = BOROUGHS + '\n[E09000007]\nrecipients = ["ldor@hackney.example"]\n'
    loaded = rules.load(folder(tmp_path, boroughs=text))
    assert loaded.boroughs["E09000007"].recipients == loaded.boroughs["E09000012"].recipients


# -- providers.toml: receipts_to ----------------------------------------------------------------------

def test_receipts_to(tmp_path):
    text = PROVIDERS.replace('host_la = "E09000019"', 'host_la = "E09000019"\nreceipts_to = "Data-Team@Example-College.example"')
    loaded = rules.load(folder(tmp_path, providers=text))
    assert loaded.providers["10001234"].receipts_to == "data-team@example-college.example"
    assert loaded.providers["10005678"].receipts_to is None


@pytest.mark.parametrize("value", ['"the data team"', '["a@b.example"]', '"a@b.example, c@d.example"'])
def test_receipts_to_that_is_not_an_address(tmp_path, value):
    text = PROVIDERS.replace('host_la = "E09000019"', f'host_la = "E09000019"\nreceipts_to = {value}')
    problem = only_problem(folder(tmp_path, providers=text))
    assert problem.file == tmp_path / "providers.toml"
    assert problem.line == line_of(text, "receipts_to")
    assert "provider 10001234: receipts_to must be one email address" in problem.message


# -- routing.toml ---------------------------------------------------------------------------------------

ROUTING = textwrap.dedent("""\
    # Rows no borough takes
    unplaceable = "reject"
    outside = "recipient"
    outside_recipient = "LDOR-Unit@Example.org"
    outside_format = "csv"

    [overrides]
    N1C = "E09000007"
    n1c4aa = "E09000019"
    "E20 1AA" = "E09000025"
    """)


def with_routing(tmp_path: Path, routing: str = ROUTING) -> Path:
    folder(tmp_path)
    (tmp_path / "routing.toml").write_text(routing)
    return tmp_path


def test_no_routing_file_means_host_borough_for_unplaceable_rows_and_reject_for_outside(tmp_path):
    loaded = rules.load(folder(tmp_path))
    assert loaded.routing == rules.Routing()
    assert loaded.routing.unplaceable == "host_borough" and loaded.routing.outside_borough is None
    assert loaded.routing.override("N1C 4AA") is None


def test_a_routing_file(tmp_path):
    loaded = rules.load(with_routing(tmp_path))
    routing = loaded.routing
    assert routing.unplaceable == "reject"
    outside = routing.outside_borough
    assert (outside.code, outside.name, outside.recipients, outside.format) == (
        rules.OUTSIDE, "Other local authorities", ("ldor-unit@example.org",), "csv")
    assert outside.line == line_of(ROUTING, "outside_recipient")
    assert dict(routing.overrides) == {"N1C": "E09000007", "N1C 4AA": "E09000019", "E20 1AA": "E09000025"}
    assert routing.override("N1C 4AA") == "E09000019"  # the full postcode wins over its district
    assert routing.override("N1C 4AB") == "E09000007"
    assert routing.override("N1 4AB") is None
    assert "ldor-unit@example.org" in loaded.recipients()
    assert [b.code for b in loaded.receiving()] == ["E09000019", "E09000012", rules.OUTSIDE]
    assert loaded.files[-1] == tmp_path / "routing.toml"


@pytest.mark.parametrize(
    "old, new, at, words",
    [
        ("unplaceable =", "unplacable =", "unplacable", "unknown key 'unplacable' in the top level (a [section] name?); did you mean 'unplaceable'?"),
        ("[overrides]", "[overide]", "[overide]", "did you mean 'overrides'?"),
        ('unplaceable = "reject"', 'unplaceable = "host"', "unplaceable", 'unplaceable must be "host_borough" or "reject", not \'host\' (did you mean "host_borough"?)'),
        ('outside = "recipient"', 'outside = "recipients"', "outside =", 'outside must be "reject" or "recipient"'),
        ('outside_recipient = "LDOR-Unit@Example.org"\n', "", 'outside = "recipient"', 'outside = "recipient" needs outside_recipient = "address@..."'),
        ('"LDOR-Unit@Example.org"', '"the unit"', "outside_recipient", "'the unit' is not an email address"),
        ('outside = "recipient"', 'outside = "reject"', "outside_recipient", "outside_recipient is set but not used"),
        ('outside_format = "csv"', 'outside_format = "pdf"', "outside_format", 'outside_format must be "xlsx" or "csv"'),
        ('N1C = "E09000007"', 'N1C = "E09000099"', "N1C =", 'override "N1C": \'E09000099\' is not a known local authority code (London boroughs are E09000001 to E09000033)'),
        ('N1C = "E09000007"', 'N1C = "Camden"', "N1C =", "'Camden' is not a known local authority code"),
        ('N1C = "E09000007"', 'N1CC = "E09000007"', "N1CC =", 'override "N1CC": not a full postcode (such as "N1C 4AA") or a postcode district'),
        ('n1c4aa = "E09000019"', 'n1c4a = "E09000019"', "n1c4a =", 'override "n1c4a": not a full postcode'),
        ('"E20 1AA" = "E09000025"', '"E20 1AA" = "E09000025"\nE201AA = "E09000012"', "E201AA", 'override "E201AA": E20 1AA is overridden twice'),
    ],
)
def test_routing_mistakes(tmp_path, old, new, at, words):
    text = ROUTING.replace(old, new)
    assert text != ROUTING
    problem = only_problem(with_routing(tmp_path, text))
    assert problem.file == tmp_path / "routing.toml"
    assert problem.line == line_of(text, at)
    assert words in problem.message


def test_a_setting_written_below_overrides(tmp_path):
    text = ROUTING.replace('unplaceable = "reject"\n', "") + 'unplaceable = "reject"\n'
    problem = only_problem(with_routing(tmp_path, text))
    assert problem.line == line_of(text, "unplaceable")
    assert "unplaceable is inside [overrides], so it is read as an override: move the line above [overrides]" in problem.message


def test_an_override_with_a_quoted_postcode_names_it(tmp_path):
    text = ROUTING.replace('"E20 1AA" = "E09000025"', '"E20 1A" = "E09000025"')
    problem = only_problem(with_routing(tmp_path, text))
    assert problem.file == tmp_path / "routing.toml"
    assert 'override "E20 1A": not a full postcode' in problem.message
    # TomlFile finds the lines of unquoted keys only; a quoted one is pointed at by its table.
    assert problem.line in (line_of(text, '"E20 1A"'), line_of(text, "[overrides]"))


def test_an_override_to_an_authority_outside_london(tmp_path, directory):
    text = ROUTING.replace('N1C = "E09000007"', 'M1 = "E08000003"\nME14 = "E07000110"')
    path = with_routing(tmp_path, text)
    loaded, problems = rules.check(path)  # the ONS lookup knows every English authority, no directory needed
    assert problems == [] and loaded.routing.override("M1 1AE") == "E08000003"
    loaded, problems = rules.check(path, rules.known_authorities(directory))
    assert problems == [] and loaded.routing.override("ME14 1XQ") == "E07000110"


def test_an_unreadable_routing_file(tmp_path):
    problem = only_problem(with_routing(tmp_path, 'unplaceable = "reject\n'))
    assert problem.file == tmp_path / "routing.toml" and problem.line == 1 and "not valid TOML" in problem.message
