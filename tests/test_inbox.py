"""The IMAP mailbox against a real Dovecot: exact bytes, UIDs, moves, and clear errors."""

from __future__ import annotations

import threading
import time

import pytest
from servers import free_port

from gateway.config import Mailbox
from gateway.errors import MailboxError
from gateway.intake.inbox import Inbox

RAW = b"From: a@college.example\r\nTo: ldor@example.org\r\nSubject: t\r\n\r\nbody with trailing spaces   \r\n"


def _settings(imap, **changes) -> Mailbox:
    values = dict(host=imap.host, port=imap.port, security="none", user=imap.user, password_env="T_IMAP_PW", timeout=5)
    return Mailbox(**{**values, **changes})


def test_messages_come_with_their_exact_bytes_and_can_be_moved(imap, monkeypatch):
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    imap.append(RAW)
    imap.append(RAW.replace(b"Subject: t", b"Subject: u"))
    with Inbox(_settings(imap)) as inbox:
        assert inbox.uidvalidity() > 0
        messages = list(inbox.messages())
        assert [m.raw for m in messages] == imap.fetch_all("INBOX")
        assert messages[0].raw == RAW
        inbox.move(messages[0].uid, "Processed")
        inbox.move(messages[1].uid, "Quarantine")
    assert imap.list_uids("INBOX") == []
    assert len(imap.list_uids("Processed")) == 1 and len(imap.list_uids("Quarantine")) == 1


def test_fetching_does_not_mark_messages_seen(imap, monkeypatch):
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    imap.append(RAW)
    with Inbox(_settings(imap)) as inbox:
        list(inbox.messages())
        typ, data = inbox.box.client.uid("FETCH", str(inbox.box.uids("ALL")[0]), "(FLAGS)")
    assert b"\\Seen" not in data[0]


def test_a_wrong_password_is_a_clear_error_without_the_password(imap, monkeypatch):
    monkeypatch.setenv("T_IMAP_PW", "wrong-password")
    with pytest.raises(MailboxError, match="refused the login") as caught:
        Inbox(_settings(imap)).__enter__()
    assert "wrong-password" not in str(caught.value)


def test_an_unset_password_variable_names_the_variable(imap, monkeypatch):
    monkeypatch.delenv("T_IMAP_PW", raising=False)
    with pytest.raises(MailboxError, match="T_IMAP_PW"):
        Inbox(_settings(imap)).__enter__()


def test_no_server_listening_is_a_retryable_error(imap, monkeypatch):
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    with pytest.raises(MailboxError, match="cannot reach") as caught:
        Inbox(_settings(imap, port=free_port())).__enter__()
    assert caught.value.retryable


def test_without_idle_the_wait_becomes_a_poll(monkeypatch):
    """pymap offers no IDLE: the gateway sleeps the interval, then looks (NOOP, UID SEARCH), instead of hanging."""
    import time

    from gateway.demo.embedded import ImapServer

    with ImapServer("ldor@example.org") as server:
        monkeypatch.setenv("T_IMAP_PW", server.password)
        settings = Mailbox(host=server.host, port=server.port, security="none", user=server.user,
                           password_env="T_IMAP_PW", timeout=5)
        with Inbox(settings) as inbox:
            assert "IDLE" not in inbox.box.client.capabilities
            start = time.monotonic()
            assert inbox.wait_for_mail(0.5) is False  # nothing came: the whole interval, then no
            assert 0.4 < time.monotonic() - start < 3
            server.deliver(RAW)
            start = time.monotonic()
            assert inbox.wait_for_mail(30) is True  # mail waiting: no wait at all
            assert time.monotonic() - start < 3
            [message] = list(inbox.messages())
            inbox.move(message.uid, "Processed")
            assert inbox.wait_for_mail(0.5) is False  # the message this session moved away is not news
            timer = threading.Timer(0.2, server.deliver, args=[RAW])
            timer.start()
            assert inbox.wait_for_mail(1.0) is True  # came during the sleep: seen at its end
            timer.join()


def test_a_message_this_session_moved_away_does_not_end_the_next_wait(imap, monkeypatch):
    """The daemon's spin (issue 15): a count from STATUS still held the moved message, so every wait
    ended at once. Told by UID, the folder is quiet, and the wait lasts until its timeout."""
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    imap.deliver_local(RAW)
    with Inbox(_settings(imap)) as inbox:
        [message] = list(inbox.messages())
        inbox.move(message.uid, "Processed")
        start = time.monotonic()
        assert inbox.wait_for_mail(1.5) is False
        assert time.monotonic() - start > 1.2


def test_a_message_left_in_the_folder_is_not_news_twice(imap, monkeypatch):
    """A message the gateway could not move stays in INBOX; it is handled again with the next new
    one, but by itself it does not wake the daemon over and over."""
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    imap.deliver_local(RAW)
    with Inbox(_settings(imap)) as inbox:
        assert inbox.wait_for_mail(5) is True  # not yet listed: news
        list(inbox.messages())
        start = time.monotonic()
        assert inbox.wait_for_mail(1.0) is False
        assert time.monotonic() - start > 0.8
        imap.deliver_local(RAW.replace(b"Subject: t", b"Subject: u"))
        assert inbox.wait_for_mail(5) is True
        assert [m.uid for m in inbox.messages()] == [1, 2]


def test_mail_arriving_as_idle_starts_ends_the_wait_at_once(imap, monkeypatch):
    """The race: a message lands after the look before IDLE and is announced as IDLE starts (with the
    server's "+ idling", possibly in the same packet, where imaplib buffers it). It must not wait
    for the timeout."""
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    with Inbox(_settings(imap)) as inbox:
        looks = []
        real = inbox.has_new

        def look_then_mail_arrives() -> bool:
            if not looks:
                looks.append(real())
                imap.deliver_local(RAW)  # just after the look, before IDLE
                return looks[0]
            return real()

        monkeypatch.setattr(inbox, "has_new", look_then_mail_arrives)
        start = time.monotonic()
        assert inbox.wait_for_mail(20) is True
        assert looks == [False]
        assert time.monotonic() - start < 3


def test_with_idle_a_new_message_ends_the_wait_at_once(imap, monkeypatch):
    monkeypatch.setenv("T_IMAP_PW", imap.password)
    with Inbox(_settings(imap)) as inbox:
        assert "IDLE" in inbox.box.client.capabilities
        timer = threading.Timer(0.5, imap.append, args=[RAW])
        timer.start()
        start = time.monotonic()
        assert inbox.wait_for_mail(20) is True
        took = time.monotonic() - start
        timer.join()
        assert 0.4 < took < 5  # woken by the new message, not before it and not by the timeout
