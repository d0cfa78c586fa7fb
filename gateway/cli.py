"""The `gateway` command: parse arguments, build objects, map errors to exit codes; no business logic."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

from . import config as config_module
from . import logs, rules as rules_module
from .errors import GatewayError, KeyringError, NoUsableKey
from .keys import Keyring
from .ledger import Ledger
from .outbox import Outbox
from .pipeline import Gateway, run_once
from .postcodes import Directory
from .tomlfile import Problem

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, json_lines=args.log_json)
    try:
        return args.handler(args)
    except GatewayError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="ldor-gateway: routes providers' leavers and joiners returns to each young person's home local authority, encrypted.")
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="the configuration file (default ./config.toml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log (default INFO)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: watch the mailbox, forward returns, send receipts")
    run.add_argument("--once", action="store_true", help="process everything waiting, deliver the outbox once, and exit")
    run.add_argument("--interval", type=float, default=60.0, help="seconds between mailbox checks (default 60)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="check config, rules and keys without connecting; exit 1 on any problem")
    check.set_defaults(handler=_check)

    validate = commands.add_parser("validate", help="validate a return offline and print the receipt a provider would get")
    validate.add_argument("file", type=Path, help="the return: .xlsx, .xls, .ods, .csv, or the same encrypted (.gpg/.pgp/.asc)")
    validate.add_argument("--json", action="store_true", help="print the findings as JSON")
    validate.add_argument("--provider", help="UKPRN of the provider the file is from (default: the header block's)")
    validate.set_defaults(handler=_validate)
    template = commands.add_parser("template", help="write the blank return template for providers")
    template.add_argument("out", type=Path, help="where to write it, e.g. LDOR-return.xlsx")
    template.set_defaults(handler=_template)

    demo = commands.add_parser("demo", help="the whole journey on servers embedded in this machine, nothing to configure")
    demo.add_argument("--dir", type=Path, default=Path("ldor-demo"), help="where the demo keeps its files (default ./ldor-demo)")
    demo.set_defaults(handler=_demo)
    return parser


def build(path: Path) -> Gateway:
    """Config, rules, keyring, ledger, outbox and postcode directory for one process."""
    settings = config_module.load(path)
    directory = Directory()
    rules = rules_module.load(settings.paths.rules, _known_authority(directory))
    keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env))
    for problem in keyring.import_folder(settings.paths.keys):
        log.warning("key file problem: %s", problem)
    return Gateway(settings, rules, keyring, Ledger(settings.paths.database), Outbox(settings.paths.outbox), directory)


def _known_authority(directory: Directory):
    cache: dict[str, set[str]] = {}

    def known(code: str) -> bool:
        if code in rules_module.LONDON:
            return True
        if "all" not in cache:
            cache["all"] = directory.authorities()
        return code in cache["all"]

    return known


def _run(args: argparse.Namespace) -> int:
    gateway = build(args.config)
    if args.once:
        result = run_once(gateway)
        print(f"{result.seen} message(s): {result.processed} processed, {result.quarantined} quarantined; "
              f"outbox: {result.delivery.sent} sent, {result.delivery.deferred} deferred, {result.delivery.failed} failed")
        return 0
    from .scheduler import serve

    serve(gateway, args.interval)
    return 0


def _check(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    settings, found = config_module.check(args.config)
    problems += found
    if settings is not None:
        directory = Directory()
        rules, found = rules_module.check(settings.paths.rules, _known_authority(directory))
        problems += found
        problems += _check_keys(settings, rules)
        for variable, what in ((settings.mailbox.password_env, "mailbox password"),):
            if config_module.secret(variable) is None:
                problems.append(Problem(settings.path, None, f"the {what} variable {variable} is not set in this environment (the daemon will need it)"))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found.")
        return 1
    print("config, rules and keys: no problems found.")
    return 0


def _check_keys(settings: config_module.Config, rules: rules_module.Rules) -> list[Problem]:
    problems: list[Problem] = []
    keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env))
    problems += keyring.import_folder(settings.paths.keys)
    try:
        keyring.own_fingerprint()
    except KeyringError as error:
        problems.append(Problem(settings.gnupg.home, None, f"{error}: create it with gpg --homedir {settings.gnupg.home} --quick-gen-key ADDRESS"))
    keys = keyring.public_keys()
    boroughs_file = settings.paths.rules / "boroughs.toml"
    for borough in rules.boroughs.values():
        for recipient in borough.recipients:
            try:
                keyring.key_for(recipient, keys)
            except NoUsableKey as why:
                problems.append(Problem(boroughs_file, borough.line, f"[{borough.code}] {borough.name}: {why}; its packages would be held"))
    known = {k.fingerprint for k in keys}
    for provider in rules.providers.values():
        for fingerprint in provider.signing_keys:
            if fingerprint not in known:
                problems.append(Problem(settings.paths.rules / "providers.toml", provider.line, f"provider {provider.ukprn}: signing key {fingerprint} is not in keys/"))
    return problems


def _validate(args: argparse.Namespace) -> int:
    from .offline import validate_file

    report = validate_file(args.file, args.config, args.provider, ask_password=getpass.getpass)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return 1 if report.blocking else 0


def _template(args: argparse.Namespace) -> int:
    from .template import write_template

    write_template(args.out)
    print(f"Template written to {args.out}: send it to providers; its Instructions sheet lists every rule.")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    logs.setup("ERROR")  # the demo tells its own story; the log would only repeat it
    return run_demo(args.dir, build)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
