"""Running the container: when a container app's revision becomes active, the simulator starts
the serving app as a local process, as ACA would start the revision's replica.

What the container would see, it sees: the revision's environment variables (secret
references resolved from the app's secrets), and the share's folder where the volume is
mounted. What ACA's ingress would give, it gets: HTTPS with a certificate from the simulator's
CA, on a loopback port that the app's ``ingress.fqdn`` names (``127.0.0.1:PORT``: there is no
DNS for azurecontainerapps.io here). The image is not pulled: the command runs the serving app
from this Python, after checking that what the container's command would install (the wheel
on the share) is there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trustme

log = logging.getLogger("loraplane.azuresim")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admitted(address: str, rules: list[dict[str, Any]]) -> bool:
    """What ACA's ingress lets through (ip-restrictions): no rules, everyone; Allow rules, only
    their ranges; Deny rules, everyone but theirs."""
    if not rules:
        return True
    ip = ipaddress.IPv4Address(address)
    inside = any(ip in ipaddress.IPv4Network(rule["ipAddressRange"], strict=False) for rule in rules)
    return inside if rules[0].get("action") == "Allow" else not inside


class IngressProxy:
    """The app's ingress: its public port, in front of the replica's own. A connection from an
    address the app's ipSecurityRestrictions keep out is closed at once (ACA answers 403; the
    TLS here is the app's own, so the simulator cannot answer in HTTP); the rest are piped to
    the replica both ways."""

    def __init__(self, public_port: int, replica_port: int, rules: Callable[[], list[dict[str, Any]]]) -> None:
        self.replica_port, self.rules = replica_port, rules
        self.server = socket.create_server(("127.0.0.1", public_port))
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"ingress-{public_port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, (address, _) = self.server.accept()
            except OSError:
                return  # closed
            if not admitted(address, self.rules()):
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.replica_port), timeout=10)
            except OSError:
                client.close()  # no replica answering: as ingress with no healthy replica
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self._lock:
                    self._open.discard(end)
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            ends, self._open = list(self._open), set()
        for end in ends:
            end.close()


class ContainerRunner:
    def __init__(
        self,
        workdir: Path,
        authority: trustme.CA,
        command: Sequence[str] | None = None,
        restrictions: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.folder = workdir / "containers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.command = tuple(command or (sys.executable, "-m", "serving"))
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        self.certfile = self.folder / "ingress-cert.pem"
        self.keyfile = self.folder / "ingress-key.pem"
        certificate.cert_chain_pems[0].write_to_path(str(self.certfile))
        certificate.private_key_pem.write_to_path(str(self.keyfile))
        self._ports: dict[str, int] = {}
        self._replica_ports: dict[str, int] = {}
        self._proxies: dict[str, IngressProxy] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        # The app's ipSecurityRestrictions as they are now (they change without a new revision).
        self.restrictions = restrictions or (lambda app_id: [])

    def port_for(self, app_id: str) -> int:
        """The app's ingress port: chosen once, kept across revisions (the fqdn never moves)."""
        with self._lock:
            return self._ports.setdefault(app_id.lower(), _free_port())

    def _replica_port(self, app_id: str) -> int:
        """Where the app's replica listens, behind its ingress port (kept across revisions)."""
        with self._lock:
            return self._replica_ports.setdefault(app_id.lower(), _free_port())

    def refused(self, app_id: str) -> int:
        """Connections the app's ingress closed for its IP restrictions."""
        with self._lock:
            proxy = self._proxies.get(app_id.lower())
        return proxy.refused if proxy is not None else 0

    def log_file(self, app_name: str) -> Path:
        return self.folder / f"{app_name}.log"

    def run(self, app: dict[str, Any], mounts: dict[str, Path], secrets: dict[str, str | None]) -> str | None:
        """Start the app's active revision, stopping the one before (single revision mode).
        ``mounts`` maps each mount path to the share folder behind it. Returns why the replica
        could not start, or None."""
        template = app["properties"].get("template") or {}
        containers = template.get("containers") or []
        if not containers:
            return "the revision has no containers"
        container = containers[0]
        self.stop(app["id"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
        for variable in container.get("env") or []:
            value = variable.get("value")
            if variable.get("secretRef"):
                value = secrets.get(variable["secretRef"])
                if value is None:
                    return f"secret {variable['secretRef']!r} has no value"
            env[variable["name"]] = _remap(value or "", mounts)
        port = self._replica_port(app["id"])
        env.update(
            {
                "LORAPLANE_HOST": "127.0.0.1",
                "LORAPLANE_PORT": str(port),
                "LORAPLANE_TLS_CERTFILE": str(self.certfile),
                "LORAPLANE_TLS_KEYFILE": str(self.keyfile),
                "HF_HUB_OFFLINE": "1",
            }
        )
        log_handle = open(self.log_file(app["name"]), "ab")  # noqa: SIM115 - the child owns it
        try:
            process = subprocess.Popen(
                self.command,
                env=env,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log_handle.close()
        app_id, public_port = app["id"], self.port_for(app["id"])
        with self._lock:
            self._processes[app_id.lower()] = process
            if app_id.lower() not in self._proxies:
                self._proxies[app_id.lower()] = IngressProxy(public_port, port, lambda: self.restrictions(app_id))
        log.info(
            "running %s's revision %s on port %d (pid %d)", app["name"], app["properties"].get("latestRevisionName"), port, process.pid
        )
        return None

    def running(self, app_id: str) -> bool:
        with self._lock:
            process = self._processes.get(app_id.lower())
        return process is not None and process.poll() is None

    def stop(self, app_id: str) -> None:
        with self._lock:
            process = self._processes.pop(app_id.lower(), None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def remove(self, app_id: str) -> None:
        """The app is deleted: its replica stops and its ingress closes."""
        self.stop(app_id)
        with self._lock:
            proxy = self._proxies.pop(app_id.lower(), None)
        if proxy is not None:
            proxy.close()

    def stop_all(self) -> None:
        with self._lock:
            apps = list(self._processes)
            proxies, self._proxies = list(self._proxies.values()), {}
        for app_id in apps:
            self.stop(app_id)
        for proxy in proxies:
            proxy.close()


def _remap(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the container, as the same file on this machine."""
    for mount_path, folder in mounts.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + value[len(mount_path.rstrip("/")) :]
    return value
