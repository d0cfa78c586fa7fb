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


def test_a_borough_outside_london_needs_a_known_authority(tmp_path, directory):
    text = BOROUGHS + '\n[E08000003]\nname = "Manchester"\nrecipients = ["ldor@manchester.example"]\n'
    assert only_problem(folder(tmp_path, boroughs=text)).line == line_of(text, "[E08000003]")
    known = directory.authorities()
    loaded, problems = rules.check(tmp_path, known_authority=known.__contains__)
    assert problems == []
    assert loaded.boroughs["E08000003"].name == "Manchester"


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
