"""Delivering the outbox to a real aiosmtpd relay: sent, deferred (4xx, no relay) and failed (5xx)."""

from __future__ import annotations

import pytest

from servers import free_port

from gateway.config import Smtp
from gateway.errors import SendError
from gateway.ledger import Ledger
from gateway.mail import Outgoing, compose, outgoing_id
from gateway.outbox import Outbox
from gateway.send import flush, send


def _settings(smtp) -> Smtp:
    return Smtp(host=smtp.host, port=smtp.port, security="none", from_address="ldor@example.org", timeout=5)


def _queue(tmp_path, count=1):
    ledger, outbox = Ledger(tmp_path / "ledger.db"), Outbox(tmp_path / "outbox")
    record = ledger.receive("INBOX", 1, 1, "ab" * 32)
    items = []
    for n in range(count):
        item_id = outgoing_id(record.reference, "receipt", str(n))
        raw = compose(item_id=item_id, sender="ldor@example.org", to=f"mis{n}@college.example", subject="receipt", body="counts only\n")
        items.append(Outgoing(item_id, "receipt", f"mis{n}@college.example", raw))
        outbox.put(item_id, raw)
    ledger.record_outcome(record, {"state": "queued"}, [i.ledger_row() for i in items])
    return ledger, outbox, items


def test_a_queued_message_is_sent_once_and_leaves_the_outbox(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    delivery = flush(outbox, ledger, _settings(smtp))
    assert (delivery.sent, delivery.deferred, delivery.failed) == (1, 0, 0)
    [captured] = smtp.messages
    assert captured.rcpt_tos == ["mis0@college.example"] and captured.data.replace(b"\r\n", b"\n") == item.raw.replace(b"\r\n", b"\n")
    assert outbox.pending() == [] and ledger.outgoing(item.id)["state"] == "sent"
    assert flush(outbox, ledger, _settings(smtp)).sent == 0
    assert len(smtp.messages) == 1


@pytest.mark.parametrize("stage", ["data", "rcpt"])
def test_a_4xx_answer_keeps_the_message_queued_for_a_retry(tmp_path, smtp, stage):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_on, smtp.fail_with = stage, "451 4.3.0 Try again later"
    delivery = flush(outbox, ledger, _settings(smtp))
    assert (delivery.sent, delivery.deferred) == (0, 1)
    assert outbox.pending() == [item.id]
    record = ledger.outgoing(item.id)
    assert record["state"] == "queued" and record["attempts"] == 1 and "451" in record["last_error"]
    smtp.fail_with = None
    assert flush(outbox, ledger, _settings(smtp)).sent == 1


def test_a_5xx_answer_sets_the_message_aside_as_failed(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    smtp.fail_with = "550 5.1.1 No such user"
    delivery = flush(outbox, ledger, _settings(smtp))
    assert delivery.failed == 1 and outbox.pending() == []
    assert (outbox.bad / f"{item.id}.eml").exists()
    assert ledger.outgoing(item.id)["state"] == "failed"


def test_no_relay_listening_is_retryable(tmp_path):
    ledger, outbox, [item] = _queue(tmp_path)
    settings = Smtp(host="127.0.0.1", port=free_port(), security="none", from_address="ldor@example.org", timeout=2)
    with pytest.raises(SendError) as caught:
        send(item.raw, settings)
    assert caught.value.retryable
    assert flush(outbox, ledger, settings).deferred == 1 and outbox.pending() == [item.id]


def test_a_file_that_does_not_match_its_ledger_hash_is_never_sent(tmp_path, smtp):
    ledger, outbox, [item] = _queue(tmp_path)
    outbox.put(item.id, item.raw.replace(b"counts only", b"tampered!!!"))
    delivery = flush(outbox, ledger, _settings(smtp))
    assert delivery.failed == 1 and smtp.messages == []
    assert (outbox.bad / f"{item.id}.eml").exists()


def test_a_file_the_ledger_has_not_recorded_yet_is_left_for_its_message_to_be_redone(tmp_path, smtp):
    ledger, outbox = Ledger(tmp_path / "ledger.db"), Outbox(tmp_path / "outbox")
    raw = compose(item_id="f" * 32, sender="ldor@example.org", to="x@example.org", subject="s", body="b\n")
    outbox.put("f" * 32, raw)
    delivery = flush(outbox, ledger, _settings(smtp))
    assert delivery == type(delivery)() and outbox.pending() == ["f" * 32] and smtp.messages == []
