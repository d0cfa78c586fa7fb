"""Servers the demo runs on this machine: pymap (a pure-Python IMAP server) and an aiosmtpd relay.

They stand in for the council's mailbox and mail relay so `gateway demo` needs nothing configured.
Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from imap_tools import MailBoxUnencrypted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ImapServer:
    """pymap with its in-memory backend, one user, in a child process."""

    def __init__(self, user: str) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = user
        self.password = secrets.token_urlsafe(12)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ImapServer:
        command = [
            sys.executable, "-c", "from pymap.main import main; main()",
            "--host", self.host, "--port", str(self.port), "--no-tls",
            # "=" form: a generated password may begin with "-", which argparse would take for an option.
            "dict", f"--demo-user={self.user}", f"--demo-password={self.password}",
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read() if self._process.stderr is not None else b""  # a pipe: never None
                raise RuntimeError(f"the demo IMAP server did not start: {error.decode(errors='replace')[-500:]}")
            try:
                with MailBoxUnencrypted(self.host, self.port, timeout=2).login(self.user, self.password):
                    return self
            except Exception:  # not listening yet
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the demo IMAP server did not answer within 20 seconds")

    def __exit__(self, *exc: object) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def deliver(self, raw: bytes) -> None:
        with MailBoxUnencrypted(self.host, self.port, timeout=10).login(self.user, self.password) as box:
            box.append(raw, "INBOX")

    def count(self, folder: str) -> int:
        with MailBoxUnencrypted(self.host, self.port, timeout=10).login(self.user, self.password, initial_folder=None) as box:
            if not box.folder.exists(folder):
                return 0
            return int(box.folder.status(folder, ["MESSAGES"])["MESSAGES"])


class Relay:
    """An SMTP relay that keeps each message it is given as a .eml file in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.received: list[tuple[list[str], Path]] = []
        self._controller = Controller(self, hostname=self.host, port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # aiosmtpd's handler hook
        path = self.folder / f"{len(self.received) + 1:03d}.eml"
        # The Controller keeps decode_data False, so the content is bytes, as the original content is.
        path.write_bytes(cast(bytes, envelope.original_content or envelope.content))
        self.received.append((list(envelope.rcpt_tos), path))
        return "250 OK"

    def __enter__(self) -> Relay:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
