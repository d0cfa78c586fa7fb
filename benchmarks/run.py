"""Benchmarks of the whole gateway, measured from outside on real servers; prints a table, writes JSON.

    python benchmarks/run.py [--only B1,B2,B3,B4] [--rows 100000] [--burst 600] [--returns 20]
                             [--rest-minutes 5] [--json FILE]

Not tests: they measure and print, for comparing changes on the same machine. Each makes its own
data, throwaway keys, a private Dovecot and an SMTP relay (as the tests do; needs root, gpg and
dovecot-imapd, like the tests).

- B1, B2, B4 (benchmarks/throughput.py): a 100,000-row return and the gateway's peak memory; a month-end
  burst of returns against a naive loop doing the same work; the postcode directory's first lookup and
  lookups a second. Each beside its floor measured in the same run.
- B3, latency: the daemon on IMAP IDLE; a return delivered to the mailbox (by the mail server's own
  delivery agent) -> its last borough package accepted by the relay. p50, p95, max. Its floor is the
  mail server's own notice: a bare IMAP client idling on the same folder times when the server
  announces each return (Dovecot waits 500 ms after a change before telling IDLE clients, to batch
  them). The gateway's own share is the rest: announced -> last package at the relay.
- B5, at rest: the same daemon, after those returns, left alone for --rest-minutes; its CPU time, its
  logins to the mail server and its log lines, extrapolated to an hour. A daemon at rest should
  cost nothing: a fix for latency must not cost rest, nor the other way round.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import throughput  # noqa: E402  (beside this file)
from helpers import PROVIDER_SENDER, install, provider_message, throwaway_keys  # noqa: E402
from probe import RunningDaemon, wait_for  # noqa: E402
from servers import Dovecot, SmtpCapture  # noqa: E402

from gateway.demo.sample import people, workbook  # noqa: E402
from gateway.reference.postcodes import Directory  # noqa: E402

BOROUGHS = {"E09000019": 1, "E09000007": 1}  # each return: one Islington and one Camden resident


class Announcements:
    """A bare IMAP client idling on INBOX in a thread: when the server announced each new message."""

    def __init__(self, imap: Dovecot) -> None:
        self.times: list[float] = []
        self._client = imaplib.IMAP4(imap.host, imap.port)
        self._client.login(imap.user, imap.password)
        self._client.select("INBOX")
        tag = self._client._new_tag()
        self._client.send(tag + b" IDLE\r\n")
        if not self._client.readline().startswith(b"+"):
            raise RuntimeError("the test server refused IDLE")
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                line = self._client.readline()
            except (OSError, ValueError):
                return
            if not line:
                return
            if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                self.times.append(time.monotonic())

    def first_after(self, moment: float) -> float | None:
        """None when the server announced nothing: the message was gone before it got round to it."""
        return min((t for t in self.times if t >= moment), default=None)

    def close(self) -> None:
        self._client.sock.shutdown(socket.SHUT_RDWR)  # ends the reader's readline; closing first would wait for it
        self._thread.join(timeout=5)
        self._client.shutdown()


def latency_and_rest(work: Path, returns: int, rest_minutes: float) -> list[dict]:
    """B3 and B5 on one daemon: first the returns one at a time, then the rest."""
    directory = Directory()
    with throwaway_keys(work / "keys") as keys, \
            Dovecot(work / "imap", user="ldor@example.org", password="bench-secret") as imap, SmtpCapture() as smtp:
        config = install(work / "gateway", keys, (imap.host, imap.port, imap.user, "TEST_IMAP_PASSWORD"),
                         (smtp.host, smtp.port), timeout=10)
        messages = []
        for n in range(returns):
            rows = [p.cells() for p in people(directory, BOROUGHS, seed=1000 + n)]
            messages.append(provider_message([("return.xlsx.gpg", keys.encrypt_for_gateway(
                workbook("Example College", "10001234", rows)))]))
        with RunningDaemon(config, imap.password, work / "daemon.log") as daemon:
            wait_for(lambda: imap.logins() > 1, 30, "the daemon's login")  # Dovecot's start-up check is the first
            announced = Announcements(imap)
            time.sleep(1.0)  # in IDLE
            took, floor = [], []
            for raw in messages:
                before = len(smtp.messages)
                packages = lambda before=before: [m for m in smtp.messages[before:] if PROVIDER_SENDER not in m.rcpt_tos]  # noqa: E731
                imap.deliver_local(raw)
                delivered = time.monotonic()
                wait_for(lambda packages=packages: len(packages()) >= len(BOROUGHS), 60, "a return's packages", interval=0.005)
                took.append(max(m.accepted_at for m in packages()) - delivered)
                wait_for(lambda before=before: len(smtp.messages) - before > len(BOROUGHS), 60, "a return's receipt")
                notice = announced.first_after(delivered)
                floor.append(None if notice is None else notice - delivered)
                time.sleep(0.5)  # the next one arrives when the daemon is back in IDLE
            announced.close()
            time.sleep(2.0)
            logins, cpu, lines = imap.logins(), daemon.cpu_seconds(), daemon.log_lines()
            time.sleep(rest_minutes * 60)
            per_hour = 60 / rest_minutes
            rest = {"cpu": (daemon.cpu_seconds() - cpu) * per_hour, "logins": (imap.logins() - logins) * per_hour,
                    "lines": (daemon.log_lines() - lines) * per_hour}
            if daemon.stop() != 0:
                raise SystemExit(f"the daemon did not stop cleanly:\n{daemon.log_tail()}")
    own = [t - f for t, f in zip(took, floor, strict=False) if f is not None]
    floor = [f for f in floor if f is not None]
    latency = [
        {"id": "B3", "what": "latency, arrival -> last package at the relay, p50", "value": statistics.median(took),
         "unit": "s", "floor": statistics.median(floor) if floor else None},
        {"id": "B3", "what": "latency p95", "value": _p95(took), "unit": "s", "floor": _p95(floor) if floor else None},
        {"id": "B3", "what": "latency max", "value": max(took), "unit": "s", "floor": max(floor, default=None)},
    ]
    if own:
        latency += [
            {"id": "B3", "what": f"the gateway's share (announced -> relay), p50 of {len(own)}",
             "value": statistics.median(own), "unit": "s"},
            {"id": "B3", "what": "the gateway's share p95", "value": _p95(own), "unit": "s", "target": 0.15},
            {"id": "B3", "what": "the gateway's share max", "value": max(own), "unit": "s", "target": 0.5},
        ]
    return latency + [
        {"id": "B5", "what": f"at rest: CPU per hour (from {rest_minutes:g} min)", "value": rest["cpu"], "unit": "s", "target": 30.0},
        {"id": "B5", "what": "at rest: IMAP logins per hour", "value": rest["logins"], "unit": "", "target": 0.0},
        {"id": "B5", "what": "at rest: log lines per hour", "value": rest["lines"], "unit": "", "target": 300.0},
    ]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="B1,B2,B3,B4", help="which benchmarks (default B1-B4; B5 takes --rest-minutes)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of B1's return (default 100,000)")
    parser.add_argument("--burst", type=int, default=600, help="returns of 50 rows in B2's burst (default 600)")
    parser.add_argument("--returns", type=int, default=20, help="returns for B3's latency (default 20)")
    parser.add_argument("--rest-minutes", type=float, default=5.0, help="how long B5 leaves the daemon alone (default 5)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"), help="where to write the figures")
    args = parser.parse_args(argv)
    wanted = {name.strip().upper() for name in args.only.split(",")}
    figures: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ldor-bench-") as folder:
        if "B4" in wanted:
            figures += throughput.directory_lookups()
        if wanted & {"B1", "B2"}:
            bench = throughput.Bench(Path(folder) / "throughput")
            try:
                if "B1" in wanted:
                    figures += throughput.large_return(bench, args.rows)
                if "B2" in wanted:
                    figures += throughput.burst(bench, args.burst)
            finally:
                bench.close()
        if wanted & {"B3", "B5"}:
            figures += [f for f in latency_and_rest(Path(folder), args.returns, args.rest_minutes) if f["id"] in wanted]
    print(f"{'':4} {'what':50} {'value':>10} {'floor':>8} {'target':>8}  ok")
    for f in figures:
        target, floor = f.get("target"), f.get("floor")
        met = f["value"] >= target if f.get("higher") else f["value"] <= target if target is not None else None
        ok = "" if met is None else ("yes" if met else "NO")
        shown = f"{f['value']:.3f} {f['unit']}".strip()
        print(f"{f['id']:4} {f['what']:50} {shown:>10} {'' if floor is None else f'{floor:.3f}':>8} "
              f"{'' if target is None else f'{target:g}' if target >= 1000 else f'{target:.3f}':>8}  {ok}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
