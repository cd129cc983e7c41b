"""A service binary run as a managed subprocess: start, wait until ready, stop, pid files.

Everything binds to 127.0.0.1 and every wait is bounded. Subclasses say how to start the binary
and how to tell that it is ready (services.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Self

LOCALHOST = "127.0.0.1"
# Starts of a service that lost a port race (see ManagedProcess.start), in all.
START_TRIES = 3


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our own exited child (no zombie)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # (PermissionError: alive, owned by someone else)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL (weed needs ~3 s to stop cleanly)."""
    with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        _pid_alive(pid)


class ManagedProcess:
    """Start/stop/readiness plumbing shared by both services."""

    name: ClassVar[str]
    binary_name: ClassVar[str]
    env_drop: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._command_line: list[str] = []
        self.ready_seconds: float | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        """The child's environment: ours, less the variables that would change its behaviour."""
        return {k: v for k, v in os.environ.items() if k not in self.env_drop}

    @classmethod
    def _cleanup(cls, command: list[str]) -> None:
        """Remove what the process leaves behind after it exited (nothing by default)."""

    @property
    def address(self) -> str:
        """Where clients connect; saved in the pid file for a later `stack` command."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The running process's id (None when not started here or stopped): for CPU figures."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @classmethod
    def pidfile(cls, data_dir: Path) -> Path:
        return Path(data_dir) / f"{cls.name}.pid.json"

    def start(self, *, detach: bool = False, timeout: float = 30.0) -> Self:
        """Start the process and wait (at most `timeout` s) until it answers.

        detach=True puts it in its own session so it outlives this Python process; stop it
        later with `stop_from_pidfile(data_dir)`. A start that loses a port race (a port free
        when picked, taken by another process before the binary bound it) is tried again with
        freshly picked internal ports, at most START_TRIES times in all.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self  # already running
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_TRIES + 1):
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                return self._start_once(detach, timeout)
            except RuntimeError:  # it exited before it was ready
                if attempt == START_TRIES or not self._lost_port_race(logged):
                    raise
            time.sleep(0.2)  # a port held for a moment only (a client's connection) is let go
        raise AssertionError("unreachable")

    def _start_once(self, detach: bool, timeout: float) -> Self:
        command = self._command_line = self._command()
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                start_new_session=detach,
            )
        pid_info = {"pid": self._proc.pid, "address": self.address, "command": command}
        self.pidfile(self.data_dir).write_text(json.dumps(pid_info, indent=2))
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def _lost_port_race(self, logged: int) -> bool:
        """True when the log written since byte `logged` says a bind failed."""
        with self.log_path.open("rb") as log:
            log.seek(logged)
            return b"address already in use" in log.read().lower()

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}; log: {self.log_path}")
            if self._is_ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready in time; log: {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _terminate(proc.pid, timeout)
            proc.poll()  # lets Popen record the (already reaped) exit
        if proc is not None:
            self._cleanup(self._command_line)
        self.pidfile(self.data_dir).unlink(missing_ok=True)

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL at once, as a crash would: nothing is flushed or closed. start() again brings
        it back on the same port (and, for a durable broker, the same storage)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout)
        self.stop()  # it has exited: this only forgets it, cleans up and drops the pid file

    @classmethod
    def stop_from_pidfile(cls, data_dir: Path, timeout: float = 15.0) -> bool:
        """Stop a (detached) instance recorded in data_dir; True when one was running."""
        path = cls.pidfile(data_dir)
        if not path.exists():
            return False
        saved = json.loads(path.read_text())
        pid = int(saved["pid"])
        running = _pid_alive(pid) and cls._pid_is_ours(pid)
        if running:
            _terminate(pid, timeout)
            cls._cleanup(saved["command"])
        path.unlink(missing_ok=True)
        return running

    @classmethod
    def is_running(cls, data_dir: Path) -> bool:
        """True when data_dir's pid file names a live process of ours (not a stale file)."""
        path = cls.pidfile(data_dir)
        if not path.exists():
            return False
        pid = int(json.loads(path.read_text())["pid"])
        return _pid_alive(pid) and cls._pid_is_ours(pid)

    @classmethod
    def _pid_is_ours(cls, pid: int) -> bool:
        # Guards against pid reuse after a reboot: only signal a process running our binary.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return sys.platform != "linux"  # no /proc to ask: trust the pid file
        return cls.binary_name.encode() in cmdline

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
