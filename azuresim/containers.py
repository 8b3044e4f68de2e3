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
import http.client
import ipaddress
import logging
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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

    def __init__(
        self,
        public_port: int,
        upstream: Callable[[], tuple[int, str] | None],
        rules: Callable[[], list[dict[str, Any]]],
        activity: Callable[[str, int], None] | None = None,
    ) -> None:
        self.upstream, self.rules = upstream, rules
        self.activity = activity or (lambda revision, change: None)
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
            # Each connection on its own: one that waits for a replica to start from zero
            # holds no other.
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        chosen = self.upstream()
        try:
            if chosen is None:
                raise OSError("no replica")
            upstream = socket.create_connection(("127.0.0.1", chosen[0]), timeout=10)
        except OSError:
            client.close()  # no replica answering: as ingress with no healthy replica
            return
        upstream.settimeout(None)
        revision = chosen[1]
        self.activity(revision, +1)
        with self._lock:
            self._open.update((client, upstream))
        ends = threading.Event()
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink, revision, ends), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, revision: str, ends: threading.Event) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                self.activity(revision, 0)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self._lock:
                    self._open.discard(end)
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            if ends.is_set():  # the second direction to end closes the connection
                self.activity(revision, -1)
            ends.set()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            ends, self._open = list(self._open), set()
        for end in ends:
            end.close()


# A revision's traffic, as the app's ingress splits it: (revision name, weight in percent).
Routes = Callable[[str], list[tuple[str, int]]]
# Told of a revision's replicas as they start and stop (its id, how many run now).
Replicas = Callable[[str, int], None]
# How long a replica starting from zero may take to be ready before its request is dropped.
COLD_START_SECONDS = 300.0


@dataclass
class _Revision:
    """What the runner keeps of a revision it ran: how to start it again, how it scales, and
    the connections through it."""

    app: dict[str, Any]
    mounts: dict[str, Path]
    secrets: dict[str, str | None]
    min_replicas: int
    cooldown: float
    open: int = 0
    last_activity: float = 0.0
    starting: threading.Lock = field(default_factory=threading.Lock)


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
        replicas: Replicas | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = workdir / "containers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.command = tuple(command or (sys.executable, "-m", "serving"))
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        self.certfile = self.folder / "ingress-cert.pem"
        self.keyfile = self.folder / "ingress-key.pem"
        certificate.cert_chain_pems[0].write_to_path(str(self.certfile))
        certificate.private_key_pem.write_to_path(str(self.keyfile))
        self.cafile = self.folder / "ingress-ca.pem"  # what the simulator's own probes trust
        authority.cert_pem.write_to_path(str(self.cafile))
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
        self.replicas = replicas or (lambda revision_id, count: None)
        self.clock = clock
        self._revisions: dict[str, _Revision] = {}  # revision id -> how to run it, and its use
        self._stopping = threading.Event()
        threading.Thread(target=self._scale_down, name="replica-scaler", daemon=True).start()

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

    def _pick(self, app_id: str) -> tuple[int, str] | None:
        """The replica an app's connection goes to: a revision by its traffic weight (the newest
        running one when no weight names one). A weighted revision scaled to zero is started
        first, and the connection waits for it (scale-app: a request starts a replica)."""
        prefix = app_id.lower() + "/revisions/"
        weighted = [(name.lower(), weight) for name, weight in self.routes(app_id) if weight > 0]
        with self._lock:
            known = {rid[len(prefix) :]: rid for rid in self._revisions if rid.startswith(prefix)}
        if weighted:
            name = self._random.choices([n for n, _ in weighted], [w for _, w in weighted])[0]
            revision_id = known.get(name)
            if revision_id is not None and (self._alive(revision_id) or self._cold_start(revision_id)):
                return self._replica_port(revision_id), revision_id
        running = sorted(r for r in self._revisions_of(app_id) if self._alive(r))
        return (self._replica_port(running[-1]), running[-1]) if running else None

    def _activity(self, revision_id: str, change: int) -> None:
        with self._lock:
            revision = self._revisions.get(revision_id)
            if revision is not None:
                revision.open += change
                revision.last_activity = self.clock()

    def _scale_down(self) -> None:
        """A revision that may scale to zero stops its replica once no connection has used it
        for its cooldownPeriod (scale-app)."""
        while not self._stopping.wait(0.5):
            now = self.clock()
            with self._lock:
                idle = [
                    rid
                    for rid, r in self._revisions.items()
                    if r.min_replicas == 0 and r.open <= 0 and now - r.last_activity >= r.cooldown and rid in self._processes
                ]
            for revision_id in idle:
                log.info("revision %s idle for its cooldown: scaling to zero", revision_id.rsplit("/", 1)[-1])
                self._stop_replica(revision_id)

    def _cold_start(self, revision_id: str) -> bool:
        """Start a revision's replica from zero and wait until it is ready; False if it cannot."""
        with self._lock:
            revision = self._revisions.get(revision_id)
        if revision is None:
            return False
        with revision.starting:  # one start however many connections wait for it
            if not self._alive(revision_id):
                log.info("cold start of revision %s", revision_id.rsplit("/", 1)[-1])
                if self._launch(revision_id, revision) is not None:
                    return False
            return self._ready(self._replica_port(revision_id), COLD_START_SECONDS)

    def _ready(self, port: int, timeout: float) -> bool:
        """The replica answers /readyz with 200 (the app's readiness probe), within ``timeout``."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        deadline = self.clock() + timeout
        while self.clock() < deadline and not self._stopping.is_set():
            try:
                connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        return False

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
        if not template.get("containers"):
            return "the revision has no containers"
        revision_id = f"{app['id']}/revisions/{properties.get('latestRevisionName')}".lower()
        multiple = str((properties.get("configuration") or {}).get("activeRevisionsMode", "Single")).lower() == "multiple"
        for other in self._revisions_of(app["id"]):
            if other == revision_id or not multiple:
                self.deactivate(other)
        scale = template.get("scale") or {}
        revision = _Revision(
            app,
            mounts,
            secrets,
            min_replicas=int(scale.get("minReplicas") or 0),
            cooldown=float(scale.get("cooldownPeriod") or 300),
            last_activity=self.clock(),
        )
        with self._lock:
            self._revisions[revision_id] = revision
        return self._launch(revision_id, revision)

    def _launch(self, revision_id: str, revision: _Revision) -> str | None:
        """The revision's replica as a process, behind its ingress ports; why not, or None."""
        app, mounts, secrets = revision.app, revision.mounts, revision.secrets
        properties = app["properties"]
        container = properties["template"]["containers"][0]
        revision.last_activity = self.clock()
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
                "CONTAINER_APP_REPLICA_NAME": f"{revision_id.rsplit('/', 1)[-1]}-0",
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
                self._proxies[app_id] = IngressProxy(
                    public_port, lambda: self._pick(app_id), lambda: self.restrictions(rules), self._activity
                )
            if revision_id not in self._proxies:

                def own() -> tuple[int, str] | None:
                    alive = self._alive(revision_id) or self._cold_start(revision_id)
                    return (port, revision_id) if alive else None

                self._proxies[revision_id] = IngressProxy(own_port, own, lambda: self.restrictions(rules), self._activity)
        log.info("running %s's revision %s on port %d (pid %d)", app["name"], revision_id.rsplit("/", 1)[-1], port, process.pid)
        self.replicas(revision_id, 1)
        return None

    def running(self, app_id: str) -> bool:
        return any(self._alive(r) for r in self._revisions_of(app_id))

    def deactivate(self, revision_id: str) -> None:
        """The revision is no longer active: its replica stops, and no request starts it again
        (its ingress port stays, answering nothing)."""
        with self._lock:
            self._revisions.pop(revision_id.lower(), None)
        self._stop_replica(revision_id)

    def _stop_replica(self, revision_id: str) -> None:
        with self._lock:
            process = self._processes.pop(revision_id.lower(), None)
        if process is None:
            return
        self.replicas(revision_id.lower(), 0)
        if process.poll() is not None:
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
        self._stopping.set()
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
