"""`gateway run` seen from outside: started as a child process, measured through /proc and its log.

Shared by the soak test and the benchmarks, which must measure the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class RunningDaemon:
    """`gateway --config CONFIG run` in a child process, its log (stderr) written to a file."""

    def __init__(self, config: Path, imap_password: str, log_file: Path, *options: str) -> None:
        env = {**os.environ, "TEST_IMAP_PASSWORD": imap_password}
        self.log_file = log_file
        with log_file.open("wb") as log_out:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "run", *options],
                                            env=env, stdout=subprocess.DEVNULL, stderr=log_out)
        self.pid = self.process.pid

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far."""
        raw = Path(f"/proc/{self.pid}/stat").read_bytes()
        fields = raw[raw.rindex(b")") + 2:].split()  # after the command name: state ppid ... utime stime
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def log_lines(self) -> int:
        return self.log_file.read_bytes().count(b"\n")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not done within {timeout} s")
