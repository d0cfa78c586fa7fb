"""The outbox: a Maildir-style queue in a real folder, where a file in new/ is always complete."""

from __future__ import annotations

import os
import stat
import threading
import time

from gateway.delivery.outbox import Outbox


def test_put_read_pending_remove(tmp_path):
    box = Outbox(tmp_path / "outbox")
    path = box.put("abc123", b"From: a@b.example\r\n\r\nhello\r\n")
    assert path == tmp_path / "outbox" / "new" / "abc123.eml"
    assert path.read_bytes() == b"From: a@b.example\r\n\r\nhello\r\n"
    assert box.pending() == ["abc123"]
    assert box.read("abc123") == b"From: a@b.example\r\n\r\nhello\r\n"
    assert list(box.tmp.iterdir()) == []  # nothing left half-way
    box.remove("abc123")
    assert box.pending() == []
    assert not path.exists()
    box.remove("abc123")  # removing twice is harmless (a resend after a crash)


def test_folders_are_private(tmp_path):
    box = Outbox(tmp_path / "outbox")
    for folder in (box.tmp, box.new, box.bad, box.held):
        assert folder.is_dir()
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


def test_put_again_replaces(tmp_path):
    box = Outbox(tmp_path)
    box.put("same", b"first")
    box.put("same", b"second")
    assert box.pending() == ["same"]
    assert box.read("same") == b"second"


def test_pending_is_oldest_first(tmp_path):
    box = Outbox(tmp_path)
    now = time.time()
    for item_id, age in (("b-newest", 10), ("a-oldest", 300), ("c-middle", 100)):
        path = box.put(item_id, item_id.encode())
        os.utime(path, (now - age, now - age))
    assert box.pending() == ["a-oldest", "c-middle", "b-newest"]


def test_age(tmp_path):
    box = Outbox(tmp_path)
    path = box.put("x", b"x")
    assert 0 <= box.age("x") < 5
    then = time.time() - 3600
    os.utime(path, (then, then))
    assert 3599 <= box.age("x") < 3605


def test_set_aside_keeps_the_message_out_of_the_queue(tmp_path):
    box = Outbox(tmp_path)
    box.put("bad-one", b"corrupt")
    box.put("good-one", b"fine")
    box.set_aside("bad-one")
    assert box.pending() == ["good-one"]
    assert (box.bad / "bad-one.eml").read_bytes() == b"corrupt"
    box.set_aside("never-queued")  # nothing to move: no error
    assert sorted(p.name for p in box.bad.iterdir()) == ["bad-one.eml"]


def test_leftovers_in_tmp_are_not_pending(tmp_path):
    box = Outbox(tmp_path)
    (box.tmp / "crashed.1234.eml").write_bytes(b"half a mess")
    (box.new / "notes.txt").write_text("not a message")
    assert box.pending() == []


def test_a_queue_survives_a_restart(tmp_path):
    Outbox(tmp_path).put("kept", b"still here")
    again = Outbox(tmp_path)
    assert again.pending() == ["kept"]
    assert again.read("kept") == b"still here"


def test_a_reader_never_sees_a_half_written_message(tmp_path):
    """Watch new/ while large messages are written: every file seen there is whole."""
    box = Outbox(tmp_path)
    size = 4 * 1024 * 1024
    bodies = {f"m{i}": bytes([65 + i]) * size for i in range(6)}
    done = threading.Event()
    seen: dict[str, int] = {}
    partial: list[tuple[str, int]] = []

    def watch() -> None:
        while not done.is_set():
            for path in box.new.glob("*.eml"):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                item_id = path.name[:-4]
                seen[item_id] = seen.get(item_id, 0) + 1
                if data != bodies[item_id]:
                    partial.append((item_id, len(data)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for item_id, body in bodies.items():
            box.put(item_id, body)
            box.remove(item_id)
    finally:
        done.set()
        watcher.join()
    assert partial == []
    assert box.pending() == []


def test_restore_puts_a_set_aside_message_back_in_the_queue(tmp_path):
    box = Outbox(tmp_path)
    box.put("refused", b"ciphertext")
    box.set_aside("refused")
    assert box.set_aside_ids() == ["refused"] and box.pending() == []
    assert box.restore("refused") is True
    assert box.pending() == ["refused"] and box.set_aside_ids() == []
    assert box.read("refused") == b"ciphertext"
    assert box.restore("refused") is False  # not set aside any more


def test_a_held_package_is_kept_as_ciphertext_beside_its_facts(tmp_path):
    box = Outbox(tmp_path)
    box.hold("p1", b"\x85\x02 ciphertext", {"borough": "E09000012", "rows": 2})
    assert box.held_ids() == ["p1"] and box.pending() == []
    assert box.held_ciphertext("p1") == b"\x85\x02 ciphertext"
    assert box.held_facts("p1") == {"borough": "E09000012", "rows": 2}
    assert sorted(p.name for p in box.held.iterdir()) == ["p1.gpg", "p1.json"]
    assert list(box.tmp.iterdir()) == []
    assert Outbox(tmp_path).held_ids() == ["p1"]  # survives a restart
    box.unhold("p1")
    assert box.held_ids() == [] and list(box.held.iterdir()) == []
    box.unhold("p1")  # twice is harmless (a release after a crash)


def test_ciphertext_without_its_facts_is_not_a_held_package(tmp_path):
    box = Outbox(tmp_path)
    (box.held / "half.gpg").write_bytes(b"a crash came before the facts were written")
    assert box.held_ids() == []
