"""Delivering the outbox to a real aiosmtpd relay: sent, deferred with backoff (4xx, no relay, a relay that
hangs), given up after the configured age, refused (5xx), corrupt files; one alert to the administrator
for each message set aside, and none about an alert."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from servers import free_port

from gateway.config import Smtp
from gateway.delivery.outbox import Outbox
from gateway.delivery.send import RelayDown, flush, outbox_report, requeue, send
from gateway.errors import SendError
from gateway.ledger import Ledger
from gateway.mail import Outgoing, compose, outgoing_id

ADMIN = "admin@example.org"


def _settings(smtp, **changes) -> Smtp:
    return replace(Smtp(host=smtp.host, port=smtp.port, security="none", from_address="ldor@example.org", timeout=5), **changes)


def _queue(tmp_path, count=1, kind="receipt"):
    ledger, outbox = Ledger(tmp_path / "ledger.db"), Outbox(tmp_path / "outbox")
    record = ledger.receive("INBOX", 1, 1, "ab" * 32)
    items = []
    for n in range(count):
        item_id = outgoing_id(record.reference, kind, str(n))
        to = ADMIN if kind == "alert" else f"mis{n}@college.example"
        raw = compose(item_id=item_id, sender="ldor@example.org", to=to, subject=kind, body="counts only\n")
        items.append(Outgoing(item_id, kind, to, raw))
        outbox.put(item_id, raw)
    ledger.record_outcome(record, {"state": "queued"}, [i.ledger_row() for i in items])
    return ledger, outbox, items


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _alerts(ledger) -> list[dict]:
    return [row for row in ledger.db["outgoing"].rows if row["kind"] == "alert"]


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


class PickyRelay:
    """A real aiosmtpd relay that refuses chosen recipients with a chosen reply and takes everyone else."""

    def __init__(self, refuse: dict[str, str]) -> None:
        self.refuse = refuse
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.host, self.port = "127.0.0.1", free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"

    def __enter__(self) -> PickyRelay:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


class SilentRelay:
    """Accepts connections and never says a word: a relay that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.server.getsockname()
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self) -> SilentRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()
        self._thread.join(timeout=5)


# -- sending ------------------------------------------------------------------------------------
def test_a_queued_message_is_sent_once_and_leaves_the_outbox(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    delivery = flush(outbox, ledger, _settings(smtp))
    assert (delivery.sent, delivery.deferred, delivery.failed) == (1, 0, 0)
    [captured] = smtp.messages
    assert captured.rcpt_tos == ["mis0@college.example"] and captured.data.replace(b"\r\n", b"\n") == item.raw.replace(b"\r\n", b"\n")
    assert captured.mail_from == "ldor@example.org"
    assert outbox.pending() == [] and ledger.outgoing(item.id).state == "sent"
    assert flush(outbox, ledger, _settings(smtp)).sent == 0
    assert len(smtp.messages) == 1


def test_verp_names_the_message_in_the_envelope_sender(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    assert flush(outbox, ledger, _settings(smtp, verp=True)).sent == 1
    [captured] = smtp.messages
    assert captured.mail_from == f"ldor+{item.id}@example.org"
    assert _parse(captured.data)["From"] == "ldor@example.org"  # what people see does not change


# -- temporary failures: backoff ------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["data", "rcpt"])
def test_a_4xx_answer_keeps_the_message_queued_until_its_next_try(tmp_path, smtp, stage):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_on, smtp.fail_with = stage, "451 4.3.0 Try again later"
    now = datetime.now(UTC)
    delivery = flush(outbox, ledger, _settings(smtp), now=now)
    assert (delivery.sent, delivery.deferred) == (0, 1)
    assert outbox.pending() == [item.id]
    record = ledger.outgoing(item.id)
    assert record.state == "queued" and record.attempts == 1 and "451" in record.last_error
    # the first retry comes after retry_first_minutes (5), less up to half of it for jitter
    assert now + timedelta(minutes=2.5) - timedelta(seconds=1) <= _at(record.next_attempt_at) <= now + timedelta(minutes=5)
    smtp.fail_with = None
    early = flush(outbox, ledger, _settings(smtp), now=now + timedelta(minutes=2))
    assert (early.sent, early.waiting) == (0, 1) and smtp.messages == []
    assert flush(outbox, ledger, _settings(smtp), now=_at(record.next_attempt_at)).sent == 1
    assert ledger.outgoing(item.id).next_attempt_at is None


def test_the_wait_doubles_with_each_failure_up_to_the_ceiling(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_with = "421 4.7.0 Busy"
    settings = _settings(smtp, retry_first_minutes=2, retry_max_minutes=16)
    now = datetime.now(UTC)
    waits = []
    for _ in range(6):
        flush(outbox, ledger, settings, now=now)
        due = _at(ledger.outgoing(item.id).next_attempt_at)
        waits.append((due - now).total_seconds() / 60)
        now = due
    ceilings = [2, 4, 8, 16, 16, 16]
    assert all(c / 2 - 0.02 <= w <= c for w, c in zip(waits, ceilings, strict=False)), waits
    assert ledger.outgoing(item.id).attempts == 6 and outbox.pending() == [item.id]


def test_jitter_spreads_a_burst_of_deferred_messages(tmp_path, smtp):
    ledger, outbox, items = _queue(tmp_path, count=8)
    smtp.fail_with = "451 4.3.0 Try again later"
    assert flush(outbox, ledger, _settings(smtp)).deferred == 8
    assert len({ledger.outgoing(i.id).next_attempt_at for i in items}) > 1


def test_retry_now_tries_before_the_next_try_is_due(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_with = "451 4.3.0 Try again later"
    flush(outbox, ledger, _settings(smtp))
    smtp.fail_with = None
    assert flush(outbox, ledger, _settings(smtp)).waiting == 1
    assert flush(outbox, ledger, _settings(smtp), retry_now=True).sent == 1


def test_a_message_deferred_for_longer_than_retry_for_hours_is_given_up_with_one_alert(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    settings = _settings(smtp, retry_for_hours=2)
    smtp.fail_with = "451 4.3.0 Try again later"
    queued = _at(ledger.outgoing(item.id).queued_at)
    assert flush(outbox, ledger, settings, admin=ADMIN, now=queued + timedelta(hours=1)).deferred == 1
    assert _alerts(ledger) == []
    late = flush(outbox, ledger, settings, admin=ADMIN, now=queued + timedelta(hours=2, minutes=1))
    assert late.failed == 1
    record = ledger.outgoing(item.id)
    assert record.state == "failed" and "given up after 2 hours" in record.last_error and record.attempts == 2
    assert (outbox.bad / f"{item.id}.eml").exists() and item.id not in outbox.pending()
    [notice] = _alerts(ledger)  # the alert is queued, and deferred by the same busy relay
    assert notice["state"] == "queued" and outbox.pending() == [notice["id"]]
    smtp.fail_with = None
    assert flush(outbox, ledger, settings, admin=ADMIN, now=queued + timedelta(hours=3)).sent == 1
    [captured] = smtp.messages
    assert captured.rcpt_tos == [ADMIN]
    text = _parse(captured.data).get_body(("plain",)).get_content()
    assert item.id in text and "NOT delivered" in text and "451" in text and "mis0@college.example" in text
    assert flush(outbox, ledger, settings, admin=ADMIN, now=queued + timedelta(hours=9)) == type(late)()
    assert len(_alerts(ledger)) == 1 and len(smtp.messages) == 1


# -- permanent failures ---------------------------------------------------------------------------
def test_a_5xx_answer_sets_the_message_aside_and_alerts_the_administrator_once(tmp_path):
    with PickyRelay({"mis0@college.example": "550 5.1.1 No such user"}) as relay:
        ledger, outbox, [item] = _queue(tmp_path)
        settings = Smtp(host=relay.host, port=relay.port, security="none", from_address="ldor@example.org", timeout=5)
        delivery = flush(outbox, ledger, settings, admin=ADMIN)
        assert (delivery.sent, delivery.failed) == (1, 1)  # the one sent is the alert
        assert outbox.pending() == [] and (outbox.bad / f"{item.id}.eml").exists()
        record = ledger.outgoing(item.id)
        assert record.state == "failed" and "550" in record.last_error
        [(mail_from, rcpt_tos, data)] = relay.messages
        assert rcpt_tos == [ADMIN]
        text = _parse(data).get_body(("plain",)).get_content()
        assert item.id in text and "550" in text and f"gateway outbox --retry {item.id}" in text
        assert flush(outbox, ledger, settings, admin=ADMIN).failed == 0
        assert len(relay.messages) == 1 and len(_alerts(ledger)) == 1


def test_an_alert_that_cannot_be_delivered_is_only_logged(tmp_path, smtp, caplog):
    ledger, outbox, [notice] = _queue(tmp_path, kind="alert")
    smtp.fail_with = "550 5.1.1 No such user"
    delivery = flush(outbox, ledger, _settings(smtp), admin=ADMIN)
    assert delivery.failed == 1 and delivery.sent == 0
    assert [row["id"] for row in _alerts(ledger)] == [notice.id]  # no alert about the alert
    assert ledger.outgoing(notice.id).state == "failed" and outbox.pending() == []
    assert any("no alert is sent" in r.getMessage() for r in caplog.records)


def test_a_set_aside_message_can_be_queued_again(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_with = "550 5.1.1 No such user"
    flush(outbox, ledger, _settings(smtp))
    assert ledger.outgoing(item.id).state == "failed"
    assert requeue(outbox, ledger, "0" * 32) is False
    smtp.fail_with = None
    assert requeue(outbox, ledger, item.id) is True
    assert ledger.outgoing(item.id).attempts == 0 and outbox.pending() == [item.id]
    assert flush(outbox, ledger, _settings(smtp)).sent == 1
    assert requeue(outbox, ledger, item.id) is False  # sent: nothing to queue again


# -- a relay that is not there, or hangs ----------------------------------------------------------
def test_no_relay_listening_is_retryable(tmp_path):
    ledger, outbox, [item] = _queue(tmp_path)
    settings = Smtp(host="127.0.0.1", port=free_port(), security="none", from_address="ldor@example.org", timeout=2)
    with pytest.raises(SendError) as caught:
        send(item.raw, settings)
    assert caught.value.retryable
    assert flush(outbox, ledger, settings).deferred == 1 and outbox.pending() == [item.id]
    assert ledger.outgoing(item.id).next_attempt_at


def test_a_relay_that_hangs_times_out_and_is_tried_once_per_run(tmp_path):
    ledger, outbox, items = _queue(tmp_path, count=3)
    with SilentRelay() as relay:
        settings = Smtp(host=relay.host, port=relay.port, security="none", from_address="ldor@example.org", timeout=1)
        started = time.monotonic()
        with pytest.raises(RelayDown) as caught:
            send(items[0].raw, settings)
        assert caught.value.retryable and time.monotonic() - started < 3
        started = time.monotonic()
        delivery = flush(outbox, ledger, settings)
        elapsed = time.monotonic() - started
    # one timeout for the run, not one per queued message
    assert (delivery.deferred, delivery.waiting, delivery.sent) == (1, 2, 0) and elapsed < 3
    assert sorted(outbox.pending()) == sorted(i.id for i in items)
    assert [ledger.outgoing(i.id).attempts for i in items].count(1) == 1


# -- the outbox's own integrity ---------------------------------------------------------------------
def test_a_file_that_does_not_match_its_ledger_hash_is_never_sent(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    outbox.put(item.id, item.raw.replace(b"counts only", b"tampered!!!"))
    delivery = flush(outbox, ledger, _settings(smtp), admin=ADMIN)
    assert delivery.failed == 1
    assert all(m.rcpt_tos == [ADMIN] for m in smtp.messages) and len(smtp.messages) == 1  # only the alert
    assert (outbox.bad / f"{item.id}.eml").read_bytes().count(b"tampered!!!") == 1
    assert ledger.outgoing(item.id).state == "failed" and "hash" in ledger.outgoing(item.id).last_error
    assert item.id in _parse(smtp.messages[0].data).get_body(("plain",)).get_content()


def test_a_file_the_ledger_has_not_recorded_yet_is_left_for_its_message_to_be_redone(tmp_path, smtp):
    ledger, outbox = Ledger(tmp_path / "ledger.db"), Outbox(tmp_path / "outbox")
    raw = compose(item_id="f" * 32, sender="ldor@example.org", to="x@example.org", subject="s", body="b\n")
    outbox.put("f" * 32, raw)
    delivery = flush(outbox, ledger, _settings(smtp))
    assert delivery == type(delivery)() and outbox.pending() == ["f" * 32] and smtp.messages == []


def test_a_file_whose_package_is_still_held_is_left_for_the_release(tmp_path, smtp):
    ledger, outbox = Ledger(tmp_path / "ledger.db"), Outbox(tmp_path / "outbox")
    record = ledger.receive("INBOX", 1, 1, "cd" * 32)
    ledger.record_outcome(record, {"state": "queued"}, [{"id": "e" * 32, "kind": "package", "recipient": "x@example.org",
                                                        "borough": "E09000012", "rows": 2, "sha256": "", "state": "held"}])
    outbox.put("e" * 32, b"a release that stopped half-way")
    delivery = flush(outbox, ledger, _settings(smtp), admin=ADMIN)
    assert delivery == type(delivery)() and outbox.pending() == ["e" * 32] and smtp.messages == []


# -- the administrator's view ---------------------------------------------------------------------
def test_the_outbox_report_lists_each_state_with_ids_and_counts(tmp_path, smtp):
    ledger, outbox, items = _queue(tmp_path, count=4)
    settings = _settings(smtp)
    smtp.fail_with = "451 4.3.0 Try again later"
    flush(outbox, ledger, settings)  # all four deferred
    smtp.fail_with = None
    now = datetime.now(UTC) + timedelta(hours=2)
    ledger.db.conn.execute("update outgoing set next_attempt_at = ? where id = ?", [(now + timedelta(hours=1)).isoformat(), items[0].id])
    ledger.db.conn.commit()
    flush(outbox, ledger, settings, now=now)  # three sent, one still waiting
    ledger.mark_bounced(items[1].id, "5.1.1", "failed")
    record = ledger.receive("INBOX", 1, 2, "ef" * 32)
    ledger.record_outcome(record, {"state": "queued"}, [{"id": "h" * 32, "kind": "package", "recipient": "ldor@hackney.example",
                                                        "borough": "E09000012", "rows": 2, "sha256": "", "state": "held",
                                                        "last_error": "no public key in keys/ has a user ID with ldor@hackney.example"}])
    text = outbox_report(ledger, outbox, settings, now=now)
    assert "Queued: 1" in text and f"{items[0].id}  receipt" in text and "1 attempt(s), next try" in text and "451" in text
    assert "Held, waiting for the recipient's key" in text and "E09000012" in text and "no public key" in text
    assert "NO COPY KEPT" in text  # this held row has no copy in outbox/held
    assert "Bounced after sending: 1" in text and "status 5.1.1" in text
    assert "Sent in the last 7 days: 2 (receipt 2)" in text
    assert "Set aside in bad/, not sent (gateway outbox --retry ID queues one again): 0" in text
    assert "counts only" not in text and "mis0@college.example" not in text



# -- the settings -----------------------------------------------------------------------------------
def test_retry_settings_have_defaults_and_are_checked(tmp_path):
    from gateway import config
    from gateway.admin.scaffold import write_installation

    path = write_installation(tmp_path, imap=("127.0.0.1", 1, "ldor@example.org", "PW"), smtp=("127.0.0.1", 2),
                              sender="ldor@example.org", admin=ADMIN, boroughs={}, providers=[])
    loaded = config.load(path)  # written without any of them, as older installations are
    assert (loaded.smtp.retry_for_hours, loaded.smtp.retry_first_minutes, loaded.smtp.retry_max_minutes, loaded.smtp.verp) == (48, 5, 60, False)
    text = path.read_text()
    path.write_text(text.replace("[smtp]\n", "[smtp]\nretry_for_hours = 72\nretry_first_minutes = 1\nverp = true\n"))
    loaded = config.load(path)
    assert (loaded.smtp.retry_for_hours, loaded.smtp.retry_first_minutes, loaded.smtp.verp) == (72, 1, True)
    path.write_text(text.replace("[smtp]\n", "[smtp]\nretry_for_hours = 0\nretry_max_minutes = \"an hour\"\nverp = 1\n"))
    _, problems = config.check(path)
    messages = sorted(p.message for p in problems)
    assert messages == ["retry_for_hours must be a number of hours above 0", "retry_max_minutes must be a number of minutes above 0",
                        "verp must be true or false"]
    assert all(p.line for p in problems)
