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
import random
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
    """An ingress port in front of replicas: the app's (which picks a revision by its traffic
    weight, per connection) or a revision's own (its fqdn). A connection from an address the
    app's ipSecurityRestrictions keep out is closed at once (ACA answers 403; the TLS here is
    the replica's own, so the simulator cannot answer in HTTP); the rest are piped to the
    replica ``upstream`` names, both ways."""

    def __init__(self, public_port: int, upstream: Callable[[], int | None], rules: Callable[[], list[dict[str, Any]]]) -> None:
        self.upstream, self.rules = upstream, rules
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
            port = self.upstream()
            try:
                if port is None:
                    raise OSError("no replica")
                upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
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


# A revision's traffic, as the app's ingress splits it: (revision name, weight in percent).
Routes = Callable[[str], list[tuple[str, int]]]


class ContainerRunner:
    """Each active revision of an app runs as a process of its own (one replica), behind its
    own ingress port (the revision's fqdn) and the app's, which picks a revision by the app's
    traffic weights for each connection it takes (ACA's ingress splits by request; a client that
    keeps its connection stays on one revision here). In single revision mode a revision that
    starts stops the one before."""

    def __init__(
        self,
        workdir: Path,
        authority: trustme.CA,
        command: Sequence[str] | None = None,
        restrictions: Callable[[str], list[dict[str, Any]]] | None = None,
        routes: Routes | None = None,
    ) -> None:
        self.folder = workdir / "containers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.command = tuple(command or (sys.executable, "-m", "serving"))
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        self.certfile = self.folder / "ingress-cert.pem"
        self.keyfile = self.folder / "ingress-key.pem"
        certificate.cert_chain_pems[0].write_to_path(str(self.certfile))
        certificate.private_key_pem.write_to_path(str(self.keyfile))
        self._ports: dict[str, int] = {}  # app id -> its ingress port
        self._revision_ports: dict[str, int] = {}  # revision id -> its own ingress port
        self._replica_ports: dict[str, int] = {}  # revision id -> where its replica listens
        self._proxies: dict[str, IngressProxy] = {}  # app or revision id -> its ingress
        self._processes: dict[str, subprocess.Popen] = {}  # revision id -> its replica
        self._lock = threading.Lock()
        self._random = random.Random(0)
        # The app's ipSecurityRestrictions as they are now (they change without a new revision),
        # and its traffic weights.
        self.restrictions = restrictions or (lambda app_id: [])
        self.routes = routes or (lambda app_id: [])

    def port_for(self, app_id: str) -> int:
        """The app's ingress port: chosen once, kept across revisions (the fqdn never moves)."""
        with self._lock:
            return self._ports.setdefault(app_id.lower(), _free_port())

    def revision_port(self, revision_id: str) -> int:
        """A revision's own ingress port (its fqdn)."""
        with self._lock:
            return self._revision_ports.setdefault(revision_id.lower(), _free_port())

    def _replica_port(self, revision_id: str) -> int:
        with self._lock:
            return self._replica_ports.setdefault(revision_id.lower(), _free_port())

    def refused(self, app_id: str) -> int:
        """Connections the app's ingress closed for its IP restrictions."""
        with self._lock:
            proxy = self._proxies.get(app_id.lower())
        return proxy.refused if proxy is not None else 0

    def log_file(self, app_name: str) -> Path:
        return self.folder / f"{app_name}.log"

    def _revisions_of(self, app_id: str) -> list[str]:
        prefix = app_id.lower() + "/revisions/"
        with self._lock:
            return [r for r in self._processes if r.startswith(prefix)]

    def _pick(self, app_id: str) -> int | None:
        """The replica an app's connection goes to: a running revision, by traffic weight (the
        newest running one when no weight names one)."""
        prefix = app_id.lower() + "/revisions/"
        running = {r[len(prefix) :]: r for r in self._revisions_of(app_id) if self._alive(r)}
        weighted = [(name, weight) for name, weight in self.routes(app_id) if weight > 0 and name.lower() in running]
        if weighted:
            chosen = self._random.choices([name for name, _ in weighted], [weight for _, weight in weighted])[0]
            return self._replica_port(running[chosen.lower()])
        newest = sorted(running)[-1:] if running else []
        return self._replica_port(running[newest[0]]) if newest else None

    def _alive(self, revision_id: str) -> bool:
        with self._lock:
            process = self._processes.get(revision_id)
        return process is not None and process.poll() is None

    def run(self, app: dict[str, Any], mounts: dict[str, Path], secrets: dict[str, str | None]) -> str | None:
        """Start the app's newest revision (stopping the ones before in single revision mode).
        ``mounts`` maps each mount path to the share folder behind it. Returns why the replica
        could not start, or None."""
        properties = app["properties"]
        template = properties.get("template") or {}
        containers = template.get("containers") or []
        if not containers:
            return "the revision has no containers"
        container = containers[0]
        revision_id = f"{app['id']}/revisions/{properties.get('latestRevisionName')}".lower()
        multiple = str((properties.get("configuration") or {}).get("activeRevisionsMode", "Single")).lower() == "multiple"
        for other in self._revisions_of(app["id"]):
            if other == revision_id or not multiple:
                self.deactivate(other)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
        for variable in container.get("env") or []:
            value = variable.get("value")
            if variable.get("secretRef"):
                value = secrets.get(variable["secretRef"])
                if value is None:
                    return f"secret {variable['secretRef']!r} has no value"
            env[variable["name"]] = _remap(value or "", mounts)
        port = self._replica_port(revision_id)
        env.update(
            {
                "LORAPLANE_HOST": "127.0.0.1",
                "LORAPLANE_PORT": str(port),
                "LORAPLANE_TLS_CERTFILE": str(self.certfile),
                "LORAPLANE_TLS_KEYFILE": str(self.keyfile),
                "HF_HUB_OFFLINE": "1",
                # What ACA tells each replica; its reports on the share are named by it.
                "CONTAINER_APP_REPLICA_NAME": f"{properties.get('latestRevisionName')}-0",
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
        app_id, public_port, own_port = app["id"].lower(), self.port_for(app["id"]), self.revision_port(revision_id)
        rules = app["id"]
        with self._lock:
            self._processes[revision_id] = process
            if app_id not in self._proxies:
                self._proxies[app_id] = IngressProxy(public_port, lambda: self._pick(app_id), lambda: self.restrictions(rules))
            if revision_id not in self._proxies:
                self._proxies[revision_id] = IngressProxy(
                    own_port, lambda: port if self._alive(revision_id) else None, lambda: self.restrictions(rules)
                )
        log.info("running %s's revision %s on port %d (pid %d)", app["name"], properties.get("latestRevisionName"), port, process.pid)
        return None

    def running(self, app_id: str) -> bool:
        return any(self._alive(r) for r in self._revisions_of(app_id))

    def deactivate(self, revision_id: str) -> None:
        """The revision's replica stops (its ingress port stays, answering nothing)."""
        with self._lock:
            process = self._processes.pop(revision_id.lower(), None)
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

    def stop(self, app_id: str) -> None:
        """Every revision of the app stops."""
        for revision_id in self._revisions_of(app_id):
            self.deactivate(revision_id)

    def remove(self, app_id: str) -> None:
        """The app is deleted: its replicas stop and its ingress ports close."""
        self.stop(app_id)
        key = app_id.lower()
        with self._lock:
            proxies = [self._proxies.pop(k) for k in list(self._proxies) if k == key or k.startswith(key + "/revisions/")]
        for proxy in proxies:
            proxy.close()

    def stop_all(self) -> None:
        with self._lock:
            revisions = list(self._processes)
            proxies, self._proxies = list(self._proxies.values()), {}
        for revision_id in revisions:
            self.deactivate(revision_id)
        for proxy in proxies:
            proxy.close()


def _remap(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the container, as the same file on this machine."""
    for mount_path, folder in mounts.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + value[len(mount_path.rstrip("/")) :]
    return value
