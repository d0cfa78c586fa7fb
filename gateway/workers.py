"""Worker processes for a burst of mail: each takes one job at a time and answers with its result.

Forked from the gateway's process, a worker shares what the process has built (config, rules, keyring,
postcode directory) without rebuilding it, and holds no mailbox, ledger or outbox of its own: those stay
with the process that forked it, which decides what a result means. A worker tells the parent once a
job's untrusted content has been read and checked (`tell`), so the parent can stop counting the job
against the message (pipeline.py, `_Exposure`). A worker that dies is seen by the parent as a `DIED` event
naming its job, and replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait

EXAMINED, DONE, DIED = "examined", "done", "died"
LOG = "log"  # a worker's log record, handled here by the parent's handlers

Work = Callable[[object, Callable[[], None]], object]  # (job, tell) -> result; tell() once the content is checked


@dataclass(frozen=True)
class Event:
    kind: str  # EXAMINED | DONE | DIED
    key: object  # the job's key, as given
    value: object = None  # the result, for DONE


class Workers:
    """`count` forked workers doing `work`; use as a context manager."""

    def __init__(self, count: int, work: Work) -> None:
        self._work = work
        self._context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = [self._start() for _ in range(count)]

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def idle(self) -> bool:
        return any(worker.key is None for worker in self._workers)

    def give(self, key: object, job: object) -> None:
        """Hand a job to an idle worker (there must be one)."""
        worker = next(worker for worker in self._workers if worker.key is None)
        worker.key = key
        try:
            worker.connection.send((key, job))
        except OSError:  # died while idle: its replacement takes the job
            self._replace(worker)
            self.give(key, job)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Wait until at least one worker has something to say (or `timeout` seconds); what the busy workers said."""
        busy = [worker for worker in self._workers if worker.key is not None]
        if not busy:
            return
        ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout))
        for worker in busy:
            if worker.connection in ready:
                try:
                    kind, key, value = worker.connection.recv()
                except (EOFError, OSError):
                    yield self._died(worker)
                    continue
                if kind == LOG:
                    logging.getLogger(value.name).handle(value)
                    continue
                if kind == DONE:
                    worker.key = None
                yield Event(kind, key, value)
            elif worker.process.sentinel in ready:
                yield self._died(worker)

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.connection.send(None)
            except OSError:
                pass
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self._workers = []

    def _died(self, worker: _Worker) -> Event:
        key = worker.key
        self._replace(worker)
        return Event(DIED, key)

    def _replace(self, worker: _Worker) -> None:
        worker.connection.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        self._workers[self._workers.index(worker)] = self._start()

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        # The worker closes the parent's ends of every pipe it inherits, or a worker would outlive the parent.
        others = [ours] + [worker.connection for worker in getattr(self, "_workers", [])]
        process = self._context.Process(target=_serve, args=(theirs, others, self._work))  # not daemonic: its readers are its children
        process.start()
        theirs.close()
        return _Worker(process, ours)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    key: object = None  # the job it is on, None when idle


def _serve(connection: Connection, parents_ends: list[Connection], work: Work) -> None:
    """In the worker: jobs until told to stop, or until the parent is gone (its end of the pipe closes)."""
    for end in parents_ends:
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops the workers
    _share_fork_server()
    sending = threading.Lock()  # python-gnupg's threads may log while the worker answers

    def send(kind: str, key: object, value: object = None) -> None:
        with sending:
            connection.send((kind, key, value))

    _log_through(send)
    while True:
        try:
            item = connection.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        key, job = item

        def examined(key: object = key) -> None:
            send(EXAMINED, key)

        try:
            send(DONE, key, work(job, examined))
        except (EOFError, OSError):  # the parent is gone
            return


def _log_through(send: Callable[[str, object, object], None]) -> None:
    """The worker's log records go to the parent, whose handlers decide where they are written."""
    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.msg, record.args = record.getMessage(), None  # arguments may not survive pickling
            record.exc_info = record.exc_text = record.stack_info = None
            try:
                send(LOG, None, record)
            except (EOFError, OSError):
                pass

    root = logging.getLogger()
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers[:]:  # the parent's handlers, copied by the fork: not written twice
                logger.removeHandler(handler)
    root.addHandler(Forward())


def _share_fork_server() -> None:
    """Let the worker ask the parent's fork server for its reading children (isolate.py), as the parent does.

    multiprocessing checks that server is alive by waiting for it, which only its parent may do; in a forked
    worker it would fail, and a server of the worker's own would import the readers again. Signal 0 tells
    whether the parent's is alive; if it is gone, multiprocessing starts one as usual.
    """
    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    started = type(server).ensure_running

    def ensure_running() -> None:
        try:
            os.kill(pid, 0)
            return
        except ProcessLookupError:
            pass
        del server.ensure_running  # back to multiprocessing's own, for a server of the worker's
        for name in ("_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd"):
            setattr(server, name, None)
        started(server)

    setattr(server, "ensure_running", ensure_running)  # noqa: B010 (an instance's own, in this process only)
