"""Worker processes for the CPU-heavy part of indexing: reading message files, MIME parsing
(`kittiwake.message.structure`), formatting ENVELOPE/BODYSTRUCTURE and extracting search
text.

Why processes: that work is pure Python and holds the interpreter lock; done in threads it
would stall every session's event loop for as long as it runs (a 100,000-message mailbox
walked in is minutes of it).  Each worker is a plain child process running this module
(`python -m kittiwake.store.indexworker` — multiprocessing's spawn would re-import the
server's main module), fed pickled requests over its stdin and answering on its stdout: a
private pipe between two copies of this code, never peer data.  A worker that dies is
replaced; if none can be started the work is done in the calling thread.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from kittiwake.store import fts, maildir
from kittiwake.store.imapcache import common_fields

log = logging.getLogger(__name__)

#: (uid, Maildir base name, flags for locating the file, cached structure JSON or None)
Item = tuple[int, str, tuple[str, ...], str | None]


class Prepared(NamedTuple):
    """What one message contributes to the response cache and the full-text index.  A
    named tuple: it crosses the worker pipe by the thousand, and pickles as a tuple (a
    slotted dataclass pickles through `dataclasses.fields`, several times slower)."""

    uid: int
    structure: str | None  # JSON, when the row had none (or an old schema) and it was asked
    envelope: str
    bodystructure: str
    body: str
    ascii: bool
    header: bytes | None  # None when not asked for
    common: bytes | None  # the header's COMMON_FIELDS lines (imapcache.py)
    document: tuple[str, ...] | None  # full-text columns (fts.py); None when not asked


def prepare(folder: str, items: Sequence[Item], fulltext: bool = True,
            header: bool = True) -> list[Prepared]:
    """Read, parse what is missing, format, extract text and serialise a new structure
    (`fulltext`: the indexer's whole job), cut the header block (`header`).  A session's
    own fill (neither) computes only what its FETCH shows.  Messages whose file has gone
    are left out."""
    from kittiwake.message.bodystructure import format_body_and_structure, format_envelope

    out: list[Prepared] = []
    for uid, base, flags, structure in items:
        loaded = _load(folder, base, flags, structure)
        if loaded is None:
            continue
        raw, struct, parsed = loaded
        new_json = json.dumps(struct, separators=(",", ":")) if parsed and fulltext else None
        envelope = format_envelope(struct)
        body, bodystructure = format_body_and_structure(struct)
        ascii_only = envelope.isascii() and bodystructure.isascii()
        block = raw[: struct.get("b", 0)] if header else None
        out.append(Prepared(uid, new_json, envelope, bodystructure, body, ascii_only, block,
                            common_fields(block) if block is not None else None,
                            fts.document(raw, struct) if fulltext else None))
    return out


def documents(folder: str, items: Sequence[Item]) -> list[tuple[int, tuple[str, ...]]]:
    """Full-text documents alone (the index's compaction: the cache is already there)."""
    out = []
    for uid, base, flags, structure in items:
        loaded = _load(folder, base, flags, structure)
        if loaded is not None:
            out.append((uid, fts.document(loaded[0], loaded[1])))
    return out


def _load(folder: str, base: str, flags: tuple[str, ...],
          structure: str | None) -> tuple[bytes, dict[str, Any], bool] | None:
    """A message's bytes and structure (cached, else parsed: the flag says which); None
    when its file has gone.  The file is opened by the name its flags predict, looked for
    only when another reader renamed it (or it is still in new/)."""
    from kittiwake.message.structure import SCHEMA_VERSION, parse_structure

    raw = _read(os.path.join(folder, "cur", maildir.file_name(base, flags)))
    if raw is None and not flags:  # still in new/, as a third of a walked-in Maildir
        raw = _read(os.path.join(folder, "new", base))
    if raw is None:
        path = maildir.locate(Path(folder), base, flags)
        raw = _read(str(path)) if path is not None else None
        if raw is None:
            return None
    struct: Any = json.loads(structure) if structure else None
    if isinstance(struct, dict) and struct.get("v") == SCHEMA_VERSION:
        return raw, struct, False
    return raw, parse_structure(raw), True


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


FUNCTIONS: dict[str, Callable[..., Any]] = {"prepare": prepare, "documents": documents}


def serve() -> None:
    """A worker's loop: one request in, its result out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            name, args = pickle.load(stdin)
        except EOFError:
            return
        pickle.dump(FUNCTIONS[name](*args), stdout)
        stdout.flush()


class WorkerPool:
    """Up to `size` worker processes, started on first use.  `call` blocks (run it in a
    thread); calls from several threads use several workers at once."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._lock = threading.Condition()
        self._idle: list[subprocess.Popen[bytes]] = []
        self._all: list[subprocess.Popen[bytes]] = []
        self._closed = False

    def _acquire(self) -> subprocess.Popen[bytes] | None:
        """An idle worker, a new one while there are fewer than `size`, else wait for one
        to come back: the work must not fall back into this process while workers exist
        (it would hold the interpreter lock the event loop needs).  None only when no
        worker can be had at all (closed, or processes cannot be started)."""
        with self._lock:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.poll() is None:
                        return worker
                    self._all.remove(worker)
                if self._closed:
                    return None
                if len(self._all) < self.size:
                    spawned = _spawn()
                    if spawned is None:
                        return None
                    self._all.append(spawned)
                    return spawned
                self._lock.wait()

    def _release(self, worker: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._closed:
                _stop(worker)
            else:
                self._idle.append(worker)
            self._lock.notify()

    def call(self, name: str, *args: Any) -> Any:
        worker = self._acquire()
        if worker is None or worker.stdin is None or worker.stdout is None:
            return FUNCTIONS[name](*args)
        try:
            pickle.dump((name, args), worker.stdin)
            worker.stdin.flush()
            result = pickle.load(worker.stdout)
        except Exception:
            log.warning("event=worker_lost; doing the work in process", exc_info=True)
            worker.kill()
            with self._lock:
                if worker in self._all:
                    self._all.remove(worker)
                self._lock.notify()
            return FUNCTIONS[name](*args)
        self._release(worker)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._lock.notify_all()
        for worker in idle:
            _stop(worker)


def _spawn() -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kittiwake.store.indexworker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    except OSError:
        log.warning("event=worker_unavailable; working in process")
        return None


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.stdin is not None:
        worker.stdin.close()
    try:
        worker.wait(5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
