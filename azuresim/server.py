"""Run the simulator: HTTPS on loopback with a CA of its own, in a thread or in the foreground."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import trustme
import uvicorn

from azuresim.arm import ArmSimulator
from azuresim.containers import ContainerRunner
from azuresim.state import ArmLimits, SimState

OWNER_FILE = "azure-sim.pid"
_CLAIMED: set[Path] = set()  # the folders this process's simulators hold
_CLAIMED_LOCK = threading.Lock()


class WorkdirInUse(RuntimeError):
    """Another running simulator keeps its CA and certificate in that folder."""


def _own(workdir: Path) -> Path:
    """Claim ``workdir`` for this process: a second simulator writing its CA there would leave
    the first one's clients unable to verify it (CERTIFICATE_VERIFY_FAILED)."""
    owner = workdir / OWNER_FILE
    try:
        holder = int(owner.read_text().strip())
    except (OSError, ValueError):
        holder = None
    with _CLAIMED_LOCK:
        mine = owner.resolve() in _CLAIMED
        if mine or (holder is not None and holder != os.getpid() and _alive(holder)):
            raise WorkdirInUse(f"{workdir} is the working folder of the simulator with pid {holder}: give this one another --workdir")
        owner.write_text(f"{os.getpid()}\n")
        _CLAIMED.add(owner.resolve())
    return owner


def _release(owner: Path) -> None:
    with _CLAIMED_LOCK:
        _CLAIMED.discard(owner.resolve())
    owner.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AzureSimulator:
    """``with AzureSimulator(workdir) as sim:`` then point the SDKs at ``sim.url`` and trust
    ``sim.ca_bundle``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        lro_delay_seconds: float = 0.2,
        host: str = "127.0.0.1",
        share_root: Path | None = None,
        run_containers: bool = False,
        container_command: Sequence[str] | None = None,
        standin_replicas: bool = False,
        arm_limits: bool | ArmLimits = False,
    ) -> None:
        """``run_containers`` runs each app's active revision as a serving process;
        ``standin_replicas`` instead has the simulator answer for every app as a healthy replica
        (fleets too big for a process each). ``arm_limits`` applies ARM's own throttling (True), or
        the given limits (their buckets and clock)."""
        if run_containers and standin_replicas:
            raise ValueError("run_containers and standin_replicas exclude each other: pick one")
        self.workdir = workdir
        self.host = host
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._owner = _own(self.workdir)
        # Each file share is the folder share_root/ACCOUNT/SHARE.
        self.share_root = share_root or workdir / "shares"
        self.share_root.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        limits = arm_limits if isinstance(arm_limits, ArmLimits) else ArmLimits() if arm_limits else None
        self.state = SimState(lro_delay_seconds=lro_delay_seconds, limits=limits)
        self.runner = (
            ContainerRunner(
                workdir, authority, container_command, restrictions=self._restrictions, routes=self._routes, replicas=self._replicas
            )
            if run_containers
            else None
        )
        self.arm = ArmSimulator(
            self.state, self.share_root, self.runner, standin_ingress=(lambda: f"{self.host}:{self.port}") if standin_replicas else None
        )
        server_cert = authority.issue_cert(host, "localhost")
        self.ca_bundle = self.workdir / "azure-sim-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_bundle))
        self._cert_file = self.workdir / "azure-sim-server.pem"
        server_cert.private_key_and_cert_chain_pem.write_to_path(str(self._cert_file))
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.arm.app(),
                host=host,
                port=port,
                ssl_certfile=str(self._cert_file),
                log_level="warning",
                # SDK clients keep connections alive; do not wait on them to stop.
                timeout_graceful_shutdown=1,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def start(self) -> AzureSimulator:
        self._thread = threading.Thread(target=self._server.run, name="azure-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Azure simulator did not start")
            time.sleep(0.02)
        return self

    def share_folder(self, account: str, share: str) -> Path:
        return self.arm.files.share_folder(account, share)

    def _restrictions(self, app_id: str) -> list[dict]:
        app = self.state.get(app_id) or {}
        return ((app.get("properties") or {}).get("configuration") or {}).get("ingress", {}).get("ipSecurityRestrictions") or []

    def _routes(self, app_id: str) -> list[tuple[str, int]]:
        return self.arm.routes(app_id)

    def _replicas(self, revision_id: str, count: int) -> None:
        self.arm.set_replicas(revision_id, count)

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop_all()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        _release(self._owner)

    def __enter__(self) -> AzureSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
