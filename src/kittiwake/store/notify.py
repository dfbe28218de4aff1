"""In-process change notification: "something in this account changed, look again".

RFC 2177 IDLE and RFC 9051 §7.5.1 want a session to learn of new mail, flag changes and
expunges made by others promptly.  Changes made in this process (deliveries, other IMAP
sessions, POP3 sessions) publish the account here and every waiting session wakes at once;
changes made by another process (a second worker, the CLI) are caught by the sessions'
cheap periodic poll of the mailbox's HIGHESTMODSEQ, so this is an accelerator, not the
source of truth.  The payload is deliberately nothing but the account: the session then
asks the index for "changes since my modseq", which is always correct however many
notifications were merged or missed.

Granularity is the account, not the mailbox: one account's sessions are few, a spurious
wake-up costs one indexed read, and it makes RENAME and MOVE impossible to miss.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


class Subscription:
    """One listener's wake-up flag.  `wait` returns when a change was published since the
    last `clear`, or after `timeout` seconds (the poll interval)."""

    __slots__ = ("_event", "_loop", "_notifier", "account")

    def __init__(self, notifier: ChangeNotifier, account: str) -> None:
        self._notifier = notifier
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.account = account

    def _set(self) -> None:
        self._event.set()

    def wake(self) -> None:
        """Thread-safe: wake this listener from any thread or loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
        else:
            try:
                self._loop.call_soon_threadsafe(self._set)
            except RuntimeError:  # loop closed: nobody is listening any more
                pass

    @property
    def pending(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True when woken by a publish, False on timeout."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._notifier._remove(self)


class ChangeNotifier:
    """Account-keyed pub/sub.  Publishing is thread-safe (the store's threads may call it);
    subscriptions belong to the event loop that created them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, account: str) -> Subscription:
        sub = Subscription(self, account)
        with self._lock:
            self._subs.setdefault(account, set()).add(sub)
        return sub

    def publish(self, accounts: Iterable[str]) -> None:
        with self._lock:
            targets = [s for a in set(accounts) for s in self._subs.get(a, ())]
        for sub in targets:
            sub.wake()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.account)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.account]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())
