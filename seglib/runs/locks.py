"""One holder at a time: a lock file created atomically, with its holder and a heartbeat.

A :class:`FileLock` is the file ``path`` created with ``O_CREAT | O_EXCL`` (atomic on local file
systems and on NFS v3+), holding JSON: host, pid, start time and a random token. While it is held a
daemon thread touches the file every ``heartbeat_s`` seconds; its modification time is the heartbeat.
A lock is *stale* when its holder is a dead process on this host, or when its heartbeat is older than
``stale_after_s`` (a holder on another node that died or lost the file system). A stale lock is taken
over, with a warning, under a short-lived guard file so that two processes cannot both take it.

Written by hand: the standard library has ``fcntl.flock``, which is released on death but says
nothing about who holds a lock and is unreliable across the nodes of a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from seglib.io import atomic_write_bytes

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
_GUARD_STALE_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any] | None) -> str:
    """``host pid N since T`` for messages."""
    if not holder:
        return "an unknown holder"
    return f"{holder.get('host')} pid {holder.get('pid')} since {holder.get('started')}"


class FileLock:
    """A lock held by one process at a time (see the module docstring).

    ``try_acquire()`` returns at once; ``acquire()`` waits (polling) until the lock is free or stale.
    Use as a context manager (``with FileLock(p): ...``) to wait, hold and release.
    """

    def __init__(self, path: str | Path, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(path)
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self._token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state
    @property
    def held(self) -> bool:
        return self._token is not None

    def holder(self) -> dict[str, Any] | None:
        """The holder's record, or None when the lock is free (or unreadable while being written)."""
        try:
            text = self.path.read_text()
            st = self.path.stat()
        except OSError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        info["heartbeat_age_s"] = max(0.0, time.time() - st.st_mtime)
        return info

    def is_stale(self, holder: dict[str, Any] | None = None) -> bool:
        holder = self.holder() if holder is None else holder
        if holder is None:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"]):
                return True
        return holder["heartbeat_age_s"] > self.stale_after_s

    # ------------------------------------------------------------------ acquire / release
    def _record(self, token: str) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()

    def _create(self, token: str) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._record(token))
        return True

    def _take_over(self, token: str) -> bool:
        """Replace a stale lock, under a guard file so that one process alone takes it."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _GUARD_STALE_S:
                    guard.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        os.close(fd)
        try:
            holder = self.holder()
            if holder is None:
                return self._create(token)
            if not self.is_stale(holder):
                return False
            atomic_write_bytes(self.path, self._record(token))
            msg = f"lock {self.path} of {describe(holder)} is stale (holder gone or silent for " \
                  f"{holder['heartbeat_age_s']:.0f} s): taken over"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; return whether this process now holds it."""
        if self.held:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        token = secrets.token_hex(16)
        if not (self._create(token) or (self.is_stale() and self._take_over(token))):
            return False
        self._token = token
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return True

    def acquire(self, poll_s: float = 0.5, timeout_s: float | None = None) -> None:
        """Wait until the lock is taken; ``TimeoutError`` after ``timeout_s``."""
        t0 = time.monotonic()
        told = False
        while not self.try_acquire():
            if not told:
                log.info("waiting for %s, held by %s", self.path, describe(self.holder()))
                told = True
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"lock {self.path} still held by {describe(self.holder())} after {timeout_s} s")
            time.sleep(poll_s)

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = self.holder()
        if holder is not None and holder.get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = self.holder()
            if holder is None or holder.get("token") != self._token:
                log.warning("lock %s was taken from this process (now %s)", self.path, describe(holder))
                return
            try:
                os.utime(self.path)
            except OSError as exc:
                log.warning("cannot refresh lock %s: %s", self.path, exc)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
