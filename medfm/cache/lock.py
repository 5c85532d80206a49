"""The writer lock: one process at a time creates, resumes, repairs or exports a store.

The lock is a file beside the store, ``<store>.lock``, holding the writer's host, pid, the pid's
start time and when it took the lock. It is created with a hard link from a private temp file
(atomic and exclusive even on NFS, where ``O_EXCL`` was historically unsafe and ``fcntl`` locks are
not reliable across nodes), falling back to ``O_CREAT | O_EXCL`` where links are not supported.

Stale locks: a lock whose host is this host and whose pid is no longer running (or is now another
process: the start time differs, or a zombie) was left by a crash; it is removed and taken over,
with a log line. A lock held from **another host** cannot be checked from here (its pid means
nothing on this machine), so it is never broken automatically: the message names the host, and
the fix is to delete the lock file once that job is known to be gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
from pathlib import Path

from medfm.errors import MedfmError

POLL_S = 0.5
BREAKER_STALE_S = 30.0  # a breaker file older than this was left by a process that died mid-break


def lock_path(store: Path) -> Path:
    return Path(store).with_name(Path(store).name + ".lock")


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot (field 22 of /proc/PID/stat): a pid reused later differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has finished


def _alive(pid: int, ticks: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if Path("/proc").is_dir():
        now = _start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    return True


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` iff it does not exist; never a half-written file."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MedfmError(f"disk full writing the lock file {path}", "free space, then rerun the same command") from None
        raise
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


class WriterLock:
    def __init__(self, store: Path, what: str):
        self.store, self.what = Path(store), what
        self.path = lock_path(self.store)
        self.held = False
        self._token = uuid.uuid4().hex

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _start_ticks(os.getpid()),
                "since": time.time(), "token": self._token}

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: only a lock written by something else; treated as held

    def _stale(self, holder: dict) -> bool:
        return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)), holder.get("pid_start"))

    def _break(self, holder: dict) -> bool:
        """Remove the stale lock ``holder`` names, unless someone else replaced it meanwhile."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            if time.time() - breaker.stat().st_mtime > BREAKER_STALE_S:
                breaker.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        if not _create_exclusive(breaker, str(os.getpid())):
            return False
        try:
            if self.holder() == holder:
                self.path.unlink(missing_ok=True)
                return True
            return False
        finally:
            breaker.unlink(missing_ok=True)

    def describe(self, holder: dict) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
        return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since}"

    def acquire(self, wait: bool = False, say=print) -> None:
        said = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            if _create_exclusive(self.path, json.dumps(self._record())):
                self.held = True
                return
            holder = self.holder()
            if holder is None:
                continue  # released between our attempt and the read
            if holder and self._stale(holder):
                if self._break(holder):
                    say(f"removed a stale lock on {self.store} left by {self.describe(holder)} (no longer running)")
                continue
            other_host = holder.get("host") != socket.gethostname()
            if not wait:
                gone = (f"; if that job is no longer running, delete {self.path}" if other_host or not holder else "")
                raise MedfmError(f"{self.what} {self.store} is being written by {self.describe(holder)}",
                                 f"wait for it, or pass --wait{gone}")
            if not said:
                say(f"waiting for {self.describe(holder)} to finish writing {self.store} (--wait)")
                said = True
            time.sleep(POLL_S)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if (self.holder() or {}).get("token") == self._token:  # never remove a lock that is not ours
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
