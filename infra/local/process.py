"""Serving processes on this machine: start, find again after a crash of ours, stop.

Each deployment has a run folder holding ``process.json`` (pid, the process's start time,
port, the hash of its launch settings) and ``serving.log``. The pid alone is never trusted: a
process is ours only if its start time matches the record, so a recycled pid is never
adopted or killed. A child also carries ``LORAPLANE_DEPLOYMENT_UID`` in its environment, so one
started just before the daemon was killed -9, before its record was written, is found by a
scan and adopted instead of started twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

MARKER_ENV = "LORAPLANE_DEPLOYMENT_UID"
LOG_ROTATE_BYTES = 10 * 1024 * 1024


@dataclass
class ProcessRecord:
    uid: str
    pid: int
    create_time: float
    port: int
    config_hash: str
    started_at: float  # wall clock, seconds since the epoch
    consecutive_failures: int = 0  # quick deaths in a row before this start


@dataclass(frozen=True)
class LaunchConfig:
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # the settings that come from the spec

    @property
    def hash(self) -> str:
        blob = json.dumps([self.command, self.env], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunFolder:
    """One deployment's run folder."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        self.record_file = self.path / "process.json"
        self.log_file = self.path / "serving.log"
        self.token_file = self.path / "admin-token"

    def admin_token(self) -> str:
        """The serving app's admin token: made once, kept readable by this user alone."""
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            pass
        self.path.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token)
        return token

    def read_record(self) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_record(self, record: ProcessRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        scratch = self.record_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(asdict(record)))
        os.replace(scratch, self.record_file)  # atomic: a reader sees the old or the new

    def forget_record(self) -> None:
        """The process was stopped on purpose: its exit is no crash to back off from."""
        self.record_file.unlink(missing_ok=True)

    def tail_log(self, lines: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                block, data = 8192, b""
                while size > 0 and data.count(b"\n") <= lines:
                    step = min(block, size)
                    size -= step
                    log.seek(size)
                    data = log.read(step) + data
        except FileNotFoundError:
            return ""
        return b"\n".join(data.splitlines()[-lines:]).decode("utf-8", "replace")


def _identity_matches(process: psutil.Process, create_time: float) -> bool:
    try:
        return abs(process.create_time() - create_time) < 0.05 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class MarkerIndex:
    """Which live process carries which deployment's marker, from one scan of every process
    reused for ``max_age`` seconds: observing many deployments that have no process must not
    read every process's environment once per deployment."""

    def __init__(self, max_age: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._by_uid: dict[str, psutil.Process] = {}
        self._scanned = float("-inf")
        self._lock = threading.Lock()

    def lookup(self, uid: str) -> psutil.Process | None:
        with self._lock:
            if self.clock() - self._scanned > self.max_age:
                self._by_uid = _scan_markers()
                self._scanned = self.clock()
            process = self._by_uid.get(uid)
        if process is not None and _alive(process):
            return process
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _scan_markers() -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for process in psutil.process_iter(["pid"]):
        try:
            if process.pid == os.getpid():
                continue
            marker = process.environ().get(MARKER_ENV)
        except psutil.Error:
            continue
        if marker and _alive(process):
            found.setdefault(marker, process)
    return found


def find_process(
    record: ProcessRecord | None, uid: str, *, index: MarkerIndex | None = None
) -> tuple[psutil.Process, ProcessRecord | None] | None:
    """The live serving process of this deployment, checked by identity, or None. Without a
    trustworthy record, a process carrying the deployment's marker (one a crash kept us from
    recording): from ``index`` when given (observing), else from a fresh scan (before starting
    one, where a stale answer could double it)."""
    if record is not None and record.uid == uid:
        try:
            process = psutil.Process(record.pid)
        except psutil.Error:
            process = None
        if process is not None and _identity_matches(process, record.create_time):
            return process, record
    process = index.lookup(uid) if index is not None else _scan_markers().get(uid)
    return (process, None) if process is not None else None


def launch_config_of(process: psutil.Process, keys: list[str]) -> LaunchConfig | None:
    """The launch settings a running process was given, read back from the process itself."""
    try:
        command, environ = process.cmdline(), process.environ()
    except psutil.Error:
        return None
    env = tuple(sorted((key, environ[key]) for key in keys if key in environ))
    return LaunchConfig(command=tuple(command), env=env)


def port_of(process: psutil.Process) -> int | None:
    try:
        value = process.environ().get("LORAPLANE_PORT")
    except psutil.Error:
        return None
    return int(value) if value and value.isdigit() else None


def spawn(folder: RunFolder, config: LaunchConfig, *, uid: str, port: int, base_env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    """Start the serving app in its own session, so that it outlives a daemon restart."""
    folder.path.mkdir(parents=True, exist_ok=True)
    if folder.log_file.exists() and folder.log_file.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(folder.log_file, folder.log_file.with_suffix(".log.1"))
    env = {**base_env, **dict(config.env), "LORAPLANE_PORT": str(port), MARKER_ENV: uid}
    with folder.log_file.open("ab") as log:
        log.write(f"--- loraplane: starting {' '.join(config.command)} on port {port}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(config.command),
            env=env,
            cwd=folder.path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.Error:
        create_time = time.time()
    return child, create_time


def stop(process: psutil.Process, *, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process's session, then SIGKILL what is left after the grace period."""
    try:
        group = os.getpgid(process.pid)
    except OSError:
        return
    targets = [process] + _children(process)
    try:
        if group == process.pid:
            os.killpg(group, signal.SIGTERM)
        else:
            process.terminate()
    except (OSError, psutil.Error):
        pass
    _, alive = psutil.wait_procs(targets, timeout=grace_seconds)
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    psutil.wait_procs(alive, timeout=5)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []
