"""The `gateway` command: parse arguments, build objects, map errors to exit codes; no business logic."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from . import config as config_module
from . import logs
from .app import build
from .errors import GatewayError, NoPassword, OutputError
from .ledger import Ledger
from .pipeline import run_once

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 done, and what was checked has problems (check, validate, route); 2 the command
    could not do its work (a usage, path, config, rules, network or file error, said in one line);
    3 a fault in the gateway itself; 130 interrupted. README.md, "Exit codes", says the same."""
    parser = _parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, json_lines=args.log_json)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit as "Exception ignored"
        return code
    except GatewayError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as with SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return 141
    except OSError as error:  # a path the command was given or uses: one line saying which, and why
        print(f"gateway: {_os_problem(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a fault of the gateway's: its text may quote a return's cell, so only its kind
        log.debug("unexpected error", exc_info=True)
        print(f"gateway: unexpected {type(error).__name__}: a fault in the gateway, not in what you asked; run again "
              "with --log-level DEBUG to see where, and report it to the gateway's maintainers", file=sys.stderr)
        return 3


def _os_problem(error: OSError, writing: bool = False) -> str:
    """An operating system error on a path, in words, with what to do."""
    path = Path(error.filename) if error.filename else None
    verb = "write" if writing else "use"
    if path is None:
        return f"{error.strerror or 'input/output error'}"
    if isinstance(error, FileNotFoundError) and writing and not path.parent.is_dir():
        return f"cannot write {path}: the folder {path.parent} does not exist: create it, or give another path"
    if isinstance(error, FileNotFoundError) and not writing:
        return f"cannot use {path}: no such file or folder: check the path"
    if isinstance(error, IsADirectoryError):
        return f"cannot {verb} {path}: it is a folder: give a file's path"
    if isinstance(error, PermissionError):
        return f"cannot {verb} {path}: permission denied: give a path this user ({_user()}) may {verb}"
    if isinstance(error, NotADirectoryError):
        return f"cannot {verb} {path}: a part of that path is a file, not a folder: give another path"
    return f"cannot {verb} {path}: {error.strerror or 'input/output error'}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _writable(path: Path) -> Path:
    """An output file's path, refused before any work when it cannot be written (argparse type)."""
    parent = path.parent if str(path.parent) else Path(".")
    problem: OSError | None = None
    if path.is_dir():
        problem = IsADirectoryError(21, "Is a directory", str(path))
    elif not parent.is_dir():
        problem = FileNotFoundError(2, "No such file or directory", str(path))
    elif not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        problem = PermissionError(13, "Permission denied", str(path))
    if problem is not None:
        raise argparse.ArgumentTypeError(_os_problem(problem, writing=True))
    return path


def _ukprn(text: str) -> str:
    """--provider: an 8-digit UKPRN (argparse type)."""
    if not (len(text) == 8 and text.isascii() and text.isdigit() and text[0] != "0"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a UKPRN: give the provider's 8-digit UKPRN, such as 10001234")
    return text


def _month(text: str) -> str:
    """--month: YYYY-MM (argparse type)."""
    if not re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month: give it as YYYY-MM, such as 2026-11")
    return text


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ldor-gateway")
    except metadata.PackageNotFoundError:  # run from a source folder that was never installed
        return "(not installed: run `pip install -e .`)"


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the arguments said in one line that says where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (`{self.prog} --help` shows how to use it)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="ldor-gateway: routes providers' leavers and joiners returns to each young person's home local authority, encrypted.")
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="the configuration file (default ./config.toml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log (default INFO)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("--version", action="version", version=f"gateway (ldor-gateway) {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: watch the mailbox, forward returns, send receipts")
    run.add_argument("--once", action="store_true", help="process everything waiting, deliver the outbox once, and exit")
    run.add_argument("--interval", type=float, default=30.0, help="longest wait between two looks at the mailbox when it cannot say at once that mail arrived (default 30 s)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="check config, rules and keys without connecting; exit 1 on any problem")
    check.add_argument("--connect", action="store_true", help="also sign in to the mailbox and the relay as the daemon does (password or OAuth2) and say what worked")
    check.set_defaults(handler=_check)

    validate = commands.add_parser("validate", help="validate a return offline and print the receipt a provider would get")
    validate.add_argument("file", type=Path, help="the return: .xlsx, .xls, .ods, .csv, or the same encrypted (.gpg/.pgp/.asc)")
    validate.add_argument("--json", action="store_true", help="print the findings as JSON")
    validate.add_argument("--provider", type=_ukprn, help="UKPRN of the provider the file is from (default: the header block's)")
    validate.add_argument("--password-file", type=Path, metavar="PATH", help="read the password of a protected workbook or zip from this file (for scripts)")
    validate.set_defaults(handler=_validate)
    validate.epilog = _PASSWORD_HELP
    outbox = commands.add_parser("outbox", help="list what is queued, held, failed or bounced, and why")
    outbox.add_argument("--retry", metavar="ID", help="put a failed message back in the queue (after fixing the cause)")
    outbox.add_argument("--flush-digests", action="store_true",
                        help="build every waiting daily or weekly digest now, without waiting for its hour, and send the outbox")
    outbox.set_defaults(handler=_outbox)

    route = commands.add_parser("route", help="dry run: where each row of a return would go, and why any would not; nothing is sent")
    route.add_argument("file", type=Path, help="the return (.xlsx, .csv, ... or encrypted)")
    route.add_argument("--json", action="store_true", help="print the result as JSON")
    route.add_argument("--provider", type=_ukprn, help="UKPRN of the provider the file is from (default: the header block's)")
    route.add_argument("--password-file", type=Path, metavar="PATH", help="read the password of a protected workbook or zip from this file (for scripts)")
    route.set_defaults(handler=_route)
    route.epilog = _PASSWORD_HELP

    report = commands.add_parser("report", help="the monthly monitoring report: who returned, on time or late, notifications per borough")
    report.add_argument("--month", required=True, type=_month, metavar="YYYY-MM", help="the month, e.g. 2026-11")
    report.add_argument("--out", type=lambda text: _writable(Path(text)), metavar="FILE.xlsx", help="also write the report as a workbook with charts")
    report.add_argument("--due-day", type=int, help="day of the month returns are due (default: [schedule] due_day, 10)")
    report.set_defaults(handler=_report)

    status = commands.add_parser("status", help="queues, held packages and why, rows waiting for digests, the last mailbox check, keys expiring soon")
    status.set_defaults(handler=_status)

    audit = commands.add_parser("audit", help="the hash-chained audit trail: `gateway audit verify` checks nobody altered it")
    audit.add_argument("action", choices=["verify"], help="verify: recompute the chain and name any entry edited, removed or moved")
    audit.set_defaults(handler=_audit)

    template = commands.add_parser("template", help="write the blank return template for providers")
    template.add_argument("out", type=lambda text: _writable(Path(text)), help="where to write it, e.g. LDOR-return.xlsx")
    template.set_defaults(handler=_template)

    demo = commands.add_parser("demo", help="the whole journey on servers embedded in this machine, nothing to configure")
    demo.add_argument("--dir", type=Path, default=Path("ldor-demo"), help="where the demo keeps its files (default ./ldor-demo)")
    demo.set_defaults(handler=_demo)
    _setup_commands(commands)
    _describe(commands)
    return parser


def _describe(commands: argparse._SubParsersAction[_Parser]) -> None:
    """`gateway COMMAND --help` (and `gateway keys ACTION --help`) opens with what the command is for."""
    for action in commands._choices_actions:
        sub = commands.choices[action.dest]
        sub.description = sub.description or action.help
        for nested in sub._subparsers._group_actions if sub._subparsers else ():
            _describe(nested)  # type: ignore[arg-type]  # argparse keeps its subparsers as a plain Action


PASSWORD_ENV = "GATEWAY_FILE_PASSWORD"
_PASSWORD_HELP = ("A password-protected workbook or zip is opened with the password in --password-file, else the one "
                  "in the variable the provider's password_env names (rules/providers.toml, with --provider), else "
                  f"the one in the environment variable {PASSWORD_ENV}, else asked for at the terminal.")


def _terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask_password(prompt: str) -> str:
    """The password of a protected file: from the environment, else asked at the terminal."""
    given = os.environ.get(PASSWORD_ENV)
    if given:
        return given
    if not _terminal():
        raise NoPassword(f"this file is password protected and there is no terminal to ask for the password at: "
                         f"give it with --password-file PATH, or in the environment variable {PASSWORD_ENV}, and run the command again")
    return getpass.getpass(prompt)


def _password_file(args: argparse.Namespace) -> str | None:
    """The password in --password-file: its first line, without the line's end."""
    if args.password_file is None:
        return None
    try:
        text = args.password_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NoPassword(f"--password-file {args.password_file}: not UTF-8 text; save it again as UTF-8") from None
    except OSError as error:
        raise NoPassword(f"--password-file: {_os_problem(error)}") from None
    lines: list[str] = text.splitlines()
    if not lines or not lines[0]:
        raise NoPassword(f"--password-file {args.password_file} is empty: put the password on its first line")
    return lines[0]


def _run(args: argparse.Namespace) -> int:
    if args.once:
        gateway = build(args.config)
        result = run_once(gateway)
        gateway.ledger.mailbox_checked()
        print(f"{result.seen} message(s): {result.processed} processed, {result.quarantined} quarantined; "
              f"outbox: {result.delivery.sent} sent, {result.delivery.deferred} deferred, {result.delivery.failed} failed")
        return 0
    from .scheduler import Daemon, Timing

    return Daemon(args.config, build, Timing(wait=args.interval)).run()


def _check(args: argparse.Namespace) -> int:
    from .admin.check import Advisory, check_installation

    settings, problems = config_module.check(args.config)
    connected = _connect(settings) if args.connect else 0
    if settings is not None:
        problems += check_installation(settings)
    for problem in problems:
        print(problem)
    errors = [p for p in problems if not isinstance(p, Advisory)]
    if errors:
        print(f"{len(errors)} problem(s) found" + (f", and {len(problems) - len(errors)} warning(s)." if len(problems) > len(errors) else "."))
        return 1
    if problems:
        print(f"No problems, {len(problems)} warning(s): act on them before they become problems.")
        return connected
    print("config, rules and keys: no problems found.")
    return connected


def _connect(settings: config_module.Config | None) -> int:
    """`check --connect`: one line for the mailbox's sign-in and one for the relay's; 1 if either failed."""
    from .admin.connect import connect

    if settings is None:
        return 1
    worked, lines = connect(settings)
    for line in lines:
        print(line)
    return 0 if worked else 1


def _validate(args: argparse.Namespace) -> int:
    from .admin.offline import validate_file

    report = validate_file(args.file, args.config, args.provider, ask_password=_ask_password, password=_password_file(args))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return 1 if report.blocking else 0


def _outbox(args: argparse.Namespace) -> int:
    from .delivery.send import outbox_report, requeue

    gateway = build(args.config)
    if args.flush_digests:
        from .delivery.deliver import deliver
        from .delivery.digest import send_digests

        made = send_digests(gateway, gateway.clock(), due_only=False)
        delivery = deliver(gateway, retry_now=True).delivery
        print(f"{made} digest message(s) queued or held; outbox: {delivery.sent} sent, {delivery.deferred} deferred, "
              f"{delivery.failed} failed")
        return 0
    if args.retry:
        if not requeue(gateway.outbox, gateway.ledger, args.retry):
            print(f"No failed message {args.retry} in the outbox; `gateway outbox` lists them.")
            return 1
        print(f"{args.retry} is queued again; it goes out at the next delivery.")
        return 0
    print(outbox_report(gateway.ledger, gateway.outbox, gateway.config.smtp))
    return 0


def _route(args: argparse.Namespace) -> int:
    from .admin.offline import route_file

    report = route_file(args.file, args.config, args.provider, ask_password=_ask_password, password=_password_file(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.complete else 1


def _report(args: argparse.Namespace) -> int:
    from .admin.report import monthly_report
    from .admin.report_book import write_xlsx

    gateway = build(args.config)
    due_day = args.due_day or gateway.config.schedule.due_day
    report = monthly_report(gateway.ledger, gateway.rules, args.month, due_day)
    if args.out:  # before printing: output piped into `head` may stop the printing, never the workbook
        try:
            write_xlsx(report, args.out)
        except OSError as error:
            raise OutputError(_os_problem(error, writing=True)) from None
    print(report.text())
    if args.out:
        print(f"\nWorkbook written to {args.out}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .admin.status import status_text

    print(status_text(build(args.config)))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from .admin.audit import audit_verify_text

    code, text = audit_verify_text(Ledger(config_module.load(args.config).paths.database))
    print(text, end="")
    return code


def _template(args: argparse.Namespace) -> int:
    from .admin.template import sending_from, write_template

    sending, note = sending_from(args.config)
    try:
        write_template(args.out, sending)
    except OSError as error:
        raise OutputError(_os_problem(error, writing=True)) from None
    print(f"Template written to {args.out}: send it to providers; its Instructions sheet says where to send the "
          "return, how to encrypt it, and lists every rule.")
    if note:
        print(note, file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    logs.setup("ERROR")  # the demo tells its own story; the log would only repeat it
    return run_demo(args.dir, build)


# -- setting up an installation: gateway init, gateway keys import / list -------------------------------
def _setup_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    init = commands.add_parser("init", help="a new installation: config.toml, rules/, keys/ and the gateway's own key",
                               description="Write config.toml, rules/ and keys/ into DIR and create the gateway's own key, "
                               "protected by a generated passphrase that is shown once (or written to --passphrase-file). "
                               "Never overwrites an installation.")
    init.add_argument("dir", type=Path, nargs="?", default=Path("."), help="the new installation's folder (default: here)")
    init.add_argument("--address", default="ldor@example.org", help="the secure mailbox's address: the key's user ID, "
                      "[mailbox] user and [smtp] from_address (default ldor@example.org)")
    init.add_argument("--admin", help="the administrator's address for alerts (default admin@ the mailbox's domain)")
    init.add_argument("--imap-host", help="the mailbox's IMAP server (default imap. the mailbox's domain)")
    init.add_argument("--smtp-host", help="the relay (default smtp. the mailbox's domain)")
    secret = init.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", type=Path, metavar="PATH", help="write the key's passphrase to this new file "
                        "(mode 0600, as GATEWAY_GPG_PASSPHRASE=..., ready for systemd's EnvironmentFile) instead of showing it")
    secret.add_argument("--no-passphrase", action="store_true", help="make the key without a passphrase: anyone who can "
                        "read var/gnupg can then decrypt every return")
    init.set_defaults(handler=_init)

    keys = commands.add_parser("keys", help="the public keys in keys/: `gateway keys import FILE.asc`, `gateway keys list`")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = actions.add_parser("import", help="copy a recipient's or provider's public key into keys/ as ADDRESS.asc "
                                "and say whom it serves and when it expires")
    adding.add_argument("file", type=Path, help="the public key, armoured (.asc) or binary")
    adding.add_argument("--replace", action="store_true", help="replace another key already filed under the same address")
    adding.set_defaults(handler=_keys_import)
    listing = actions.add_parser("list", help="every key in keys/: fingerprint, user IDs, uses, expiry; flags the expired, "
                                 "expiring and unused")
    listing.set_defaults(handler=_keys_list)


def _init(args: argparse.Namespace) -> int:
    from .admin.init import init_installation

    domain = args.address.rpartition("@")[2]
    if "@" not in args.address or "." not in domain:
        print(f"gateway: --address {args.address} is not an email address, e.g. --address ldor@example.org", file=sys.stderr)
        return 2
    installed = init_installation(args.dir, args.address.lower(), args.admin or f"admin@{domain}",
                                  args.imap_host or f"imap.{domain}", args.smtp_host or f"smtp.{domain}",
                                  protect=not args.no_passphrase, passphrase_file=args.passphrase_file)
    print(installed.text())
    return 0


def _keys_import(args: argparse.Namespace) -> int:
    from .admin.keyfiles import import_key_file

    print(import_key_file(config_module.load(args.config), args.file, replace=args.replace))
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from .admin.keyfiles import list_keys

    print(list_keys(config_module.load(args.config)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
