"""Untrusted files are opened and read in a child process with a memory and a time limit, so that a
native crash or a runaway allocation costs one file its answer, never the daemon its life.

python-calamine (Rust), pyzipper and msoffcrypto run on bytes a stranger chose. A Rust allocation
failure aborts the whole process (no `except` runs), and a dense read of a sheet that claims a cell
at XFD1048576 asks for 512 GB. Here each file is handled by a fresh child of a fork server (a clean
interpreter that has already imported the readers, so a child costs a fork, not an import), with
RLIMIT_AS and RLIMIT_CPU set and no core dump. The file goes to the child and the parsed result
comes back through a pipe: decrypted data never touches the disk.
"""

from __future__ import annotations

import copyreg
import io
import multiprocessing
import pickle
import resource
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import MappingProxyType
from typing import ParamSpec, TypeVar, cast

from .errors import (
    GatewayError,
    HostileFile,
    IsolatedFailure,
    LimitExceeded,
    PasswordMissing,
    ReadError,
    SenderNotRegistered,
    SenderUnreadable,
    UnknownSender,
    UnpackError,
)

P = ParamSpec("P")
T = TypeVar("T")

MEMORY_LIMIT_BYTES = 2 * 1024 ** 3  # address space of one reading child; a 100,000-row return needs a few hundred MB
TIME_LIMIT_SECONDS = 60  # wall-clock time one file may take to open or read
# Python 3.11 runs the main script again in each child (its forkserver never preloads "__main__"):
# with what the gateway's main script imports already loaded in the server, that costs a millisecond.
_PRELOAD = ["gateway.cli", "gateway.returns.read", "gateway.intake.containers"]
_ERRORS = {cls.__name__: cls for cls in (UnpackError, ReadError, HostileFile, PasswordMissing, UnknownSender,
                                         SenderNotRegistered, SenderUnreadable)}

LIMITS_ADVICE = (
    "The file could not be read within the gateway's limits (at most {memory} of memory and {seconds} "
    "seconds for one file). Please save it again from Excel as .xlsx and send it again; if it is very "
    "large, split it into several files and send each."
)


def run(work: Callable[P, T], *arguments: P.args, **named: P.kwargs) -> T:
    """`work(*arguments)` in a child process within the limits; raises the gateway error it raised (ReadError,
    UnpackError, ...), or LimitExceeded. `work` is a module-level function: the child imports it by name."""
    return cast(T, _run(work, arguments, named))  # what `work` returned, unpickled


def warm_up() -> None:
    """Start the fork server now (a fresh interpreter importing the readers takes most of a second), so that
    the first message's handling does not include it."""
    try:
        run(len, b"")
    except GatewayError:
        pass


def _run(work: Callable[..., object], arguments: tuple[object, ...], named: dict[str, object]) -> object:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)  # read once when the server starts; later calls change nothing
    ours, theirs = context.Pipe()
    child = context.Process(target=_child, args=(theirs,), daemon=True)
    child.start()
    theirs.close()
    reply = None
    timed_out = False
    try:
        try:
            limits = (MEMORY_LIMIT_BYTES, TIME_LIMIT_SECONDS)  # the parent's, so that one place decides them
            ours.send_bytes(pickle.dumps((limits, work, arguments, named), protocol=pickle.HIGHEST_PROTOCOL))
            timed_out = not ours.poll(TIME_LIMIT_SECONDS)
            if not timed_out:
                reply = ours.recv_bytes()
        except (EOFError, OSError):  # the child died before taking the file or before answering
            pass
        if reply is None:
            child.kill()
            child.join()
            raise _limit_exceeded(_death(child.exitcode, timed_out))
        child.join(5)
    finally:
        ours.close()
        if child.is_alive():
            child.kill()
            child.join()
    outcome, value = pickle.loads(reply)
    if outcome == "ok":
        return value
    kind, message, advice = value
    if kind == "MemoryError":
        raise _limit_exceeded("the reader ran out of memory")
    if kind in _ERRORS:
        raise _ERRORS[kind](message, advice)
    raise IsolatedFailure(f"{kind} in the reading process")


def _death(exitcode: int | None, timed_out: bool) -> str:
    """Why the child gave no answer, in words safe to log."""
    if timed_out:
        return f"the reader took longer than {TIME_LIMIT_SECONDS} s"
    if exitcode is not None and exitcode < 0:
        return f"the reader was ended by signal {signal.Signals(-exitcode).name}"
    return f"the reader exited with status {exitcode}"


def _child(connection: Connection) -> None:
    """In the child: take the file from the pipe, take on the limits, answer through the pipe."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core dump would put the decrypted file on disk
    (memory, seconds), work, arguments, named = pickle.loads(connection.recv_bytes())
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds + 5, seconds + 5))  # in case the parent is gone
    try:
        reply = ("ok", work(*arguments, **named))
    except BaseException as error:  # every failure is told to the parent, which decides what it means
        advice = getattr(error, "advice", "")
        reply = ("error", (type(error).__name__, str(error) if advice else "", advice))
    del arguments, named
    try:
        answer = _dumps(reply)
    except Exception as error:  # a result that cannot travel is a bug, told as one
        answer = _dumps(("error", (type(error).__name__, "", "")))
    connection.send_bytes(answer)
    connection.close()


def _dumps(value: object) -> bytes:
    """Pickle, taking read-only mappings (a Return's header and formulas) as the dicts they wrap."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: lambda m: (_read_only, (dict(m),))}
    pickler.dump(value)
    return buffer.getvalue()


def _read_only(mapping: dict[object, object]) -> MappingProxyType[object, object]:
    return MappingProxyType(mapping)


def _limit_exceeded(message: str) -> LimitExceeded:
    return LimitExceeded(message, LIMITS_ADVICE.format(memory=_size(MEMORY_LIMIT_BYTES), seconds=TIME_LIMIT_SECONDS))


def _size(count: int) -> str:
    return f"{count // 1024 ** 3} GB" if count >= 1024 ** 3 else f"{count // 1024 ** 2} MB"
