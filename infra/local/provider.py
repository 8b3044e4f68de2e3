"""The local target: the serving app as a supervised process, a folder as the share."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import psutil

from infra.endpoints import AppAnswer, EndpointClient
from infra.errors import PermanentError, TemporaryError
from infra.local.activator import Activator
from infra.local.process import (
    LaunchConfig,
    MarkerIndex,
    ProcessRecord,
    RunFolder,
    find_process,
    free_loopback_port,
    launch_config_of,
    port_of,
    spawn,
)
from infra.local.process import stop as stop_process
from infra.local.share import LocalShare, inside
from infra.provider import Action, Observation, ObservedResource, Refusal, Target, deployment_folder, keys_path, pointer_path
from state.resource import DeploymentSpec

log = logging.getLogger("loraplane.infra.local")

KIND = "ServingProcess"
ACTIVATOR = "Activator"  # the stable address of a deployment that scales to zero
# A process that dies sooner than this after starting counts as crash-looping.
QUICK_DEATH_SECONDS = 60.0
MAX_RESTART_DELAY = 300.0
EXITED = "the serving process exited"
ADOPT = "found running, started before a crash left it unrecorded: adopting it"


def default_serving_command() -> tuple[str, ...]:
    return (sys.executable, "-m", "serving")


def restart_delay(consecutive_failures: int) -> float:
    """1 s, 2 s, 4 s … capped at 5 minutes, by how many quick deaths came in a row."""
    return min(MAX_RESTART_DELAY, 2.0 ** max(0, consecutive_failures))


@dataclass(frozen=True)
class RunningProcess:
    pid: int
    port: int | None
    config_hash: str | None  # the settings it was started with (None: unreadable)
    recorded: bool  # in the run folder's record (False: found by its marker after a crash)


@dataclass(frozen=True)
class LocalFacts:
    """What the local target saw (its private observation)."""

    now: float
    share_root_exists: bool
    model_exists: bool
    record: ProcessRecord | None
    log_tail: str = ""
    running: RunningProcess | None = None


class LocalProvider:
    def __init__(
        self,
        run_root: Path,
        *,
        serving_command: Sequence[str] | None = None,
        on_change: Callable[[str], None] | None = None,
        probe_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        monitor_interval: float = 1.0,
        share_roots: Sequence[Path] = (),
    ) -> None:
        self.run_root = run_root
        # The folders a spec's shareRoot may name or lie under (LORAPLANE_LOCAL_SHARE_ROOTS):
        # the daemon reads and writes there for whoever may deploy, so nothing else.
        self.share_roots = tuple(Path(os.path.realpath(root)) for root in share_roots)
        self.serving_command = tuple(serving_command or default_serving_command())
        self.on_change = on_change
        self.probe_timeout = probe_timeout
        self.endpoints = EndpointClient(timeout=probe_timeout)
        self.clock = clock
        self.monotonic = monotonic  # how long an activator has been idle
        self.monitor_interval = monitor_interval
        self._markers = MarkerIndex()  # shared by every observe: one scan of processes at a time
        self._children: dict[str, subprocess.Popen] = {}  # started by this daemon: reaped here
        self._watched: dict[str, psutil.Process] = {}  # running processes we know of
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        # Deployments that scale to zero: each has an activator, its stable address.
        self._activators: dict[str, Activator] = {}
        self._ready_pids: dict[str, int] = {}  # deployment -> the pid last seen ready (the activator's fast path)

    # -------------------------------------------------------------------------- admission

    def admit(self, spec: DeploymentSpec) -> list[Refusal]:
        if spec.local is None:
            return []
        asked = Path(spec.local.share_root)
        real = Path(os.path.realpath(asked))  # a link to elsewhere is judged by where it leads
        if any(real == root or root in real.parents for root in self.share_roots):
            return []
        allowed = ", ".join(str(root) for root in self.share_roots) or "none"
        return [
            (
                "spec.local.shareRoot",
                f"{asked} is not a share root this loraplane allows (allowed: {allowed}); use a folder under one of "
                "them, or ask the operator to add it to LORAPLANE_LOCAL_SHARE_ROOTS",
            )
        ]

    # ----------------------------------------------------------------------------- config

    def launch_config(self, target: Target) -> LaunchConfig:
        spec = target.spec
        assert spec.local is not None  # the spec's validation guarantees it for target=local
        env = {
            "LORAPLANE_SHARE_ROOT": spec.local.share_root,
            "LORAPLANE_MODEL_PATH": spec.model.path,
            "LORAPLANE_ADAPTER_PATH": spec.adapter.path,
            "LORAPLANE_HOST": "127.0.0.1",
            "LORAPLANE_DEPLOYMENT": target.name,
            "LORAPLANE_ADAPTER_POINTER": pointer_path(target.name, target.uid),
            "HF_HUB_OFFLINE": "1",
        }
        if spec.api_keys:
            env["LORAPLANE_API_KEYS_FILE"] = keys_path(target.name, target.uid)
        env.update(target.restart_env())  # the restart strategy: a new version is a restart
        return LaunchConfig(command=self.serving_command, env=tuple(sorted(env.items())))

    def folder(self, name: str) -> RunFolder:
        return RunFolder(self.run_root, name)

    # ---------------------------------------------------------------------------- observe

    def observe(self, target: Target) -> Observation[LocalFacts]:
        spec = target.spec
        assert spec.local is not None
        share_root = Path(spec.local.share_root)
        folder = self.folder(target.name)
        record = folder.read_record()
        found = find_process(record, target.uid, index=self._markers)
        facts = LocalFacts(
            now=self.clock(),
            share_root_exists=_is_dir(share_root),
            model_exists=_is_dir(inside(share_root, spec.model.path)),
            record=record,
            log_tail=folder.tail_log(3) if found is None and record is not None else "",
        )
        activator = self._activator(target)
        if found is None:
            if target.held is not None:
                return Observation(facts, endpoint=activator.url if activator else None, detail=target.held, stopped=True, replicas=0)
            if spec.scale.max_replicas == 0:
                return Observation(
                    facts, detail="stopped: spec.scale.maxReplicas is 0, so no serving process runs", stopped=True, replicas=0
                )
            if activator is not None:
                detail = (
                    f"scaled to zero at {activator.url}: the next request starts the serving process and waits for it "
                    "(a cold start: the model's load)"
                )
                return Observation(facts, endpoint=activator.url, ready=True, detail=detail, replicas=0)
            return Observation(facts, detail="the serving process is not running", replicas=0)
        process, found_record = found
        self._watch(target.name, process)
        port = found_record.port if found_record else port_of(process)
        config_hash: str | None
        if found_record is not None:
            config_hash = found_record.config_hash
        else:
            running_config = launch_config_of(process, [k for k, _ in self.launch_config(target).env])
            config_hash = running_config.hash if running_config else None
        facts = replace(facts, running=RunningProcess(process.pid, port, config_hash, recorded=found_record is not None))
        endpoint = f"http://127.0.0.1:{port}" if port else None
        ready, detail = self._probe(endpoint)
        if ready:
            with self._lock:
                self._ready_pids[target.name] = process.pid
        if activator is not None and ready:
            detail = f"serving at {activator.url} (its process at {endpoint}; it scales to zero after {spec.scale.idle_seconds}s idle)"
        return Observation(
            facts,
            resources=[ObservedResource(KIND, f"pid:{process.pid}", "Running" if ready else "Starting")],
            endpoint=activator.url if activator is not None else endpoint,
            ready=ready,
            detail=detail,
            replicas=1,
        )

    def _probe(self, endpoint: str | None) -> tuple[bool, str]:
        if endpoint is None:
            return False, "the serving process's port is unknown"
        try:
            response = self.endpoints.get(f"{endpoint}/readyz")
        except httpx.HTTPError as exc:
            return False, f"waiting for the serving app to answer on {endpoint} ({type(exc).__name__})"
        if response.status_code == 200:
            return True, f"serving at {endpoint}"
        try:
            reason = response.json().get("detail") or response.json().get("message") or response.text
        except ValueError:
            reason = response.text
        return False, f"the serving app is not ready: {str(reason).strip()[:300]}"

    # ------------------------------------------------------------------------------- plan

    def plan(self, target: Target, observation: Observation[LocalFacts]) -> list[Action]:
        spec, facts = target.spec, observation.private
        assert spec.local is not None
        running = facts.running
        activator = self._activator(target)
        scales_to_zero = spec.scale.min_replicas == 0 and spec.scale.max_replicas > 0
        if scales_to_zero and activator is None:
            return [Action("create", ACTIVATOR, target.name, "minReplicas is 0: a stable address that starts the process on demand")]
        if not scales_to_zero and activator is not None:
            return [Action("delete", ACTIVATOR, target.name, "minReplicas is not 0: the process's own address serves")]
        if activator is not None:
            activator.refusal = target.held  # while held, a request is told why, at once
        if target.held is not None:
            return [Action("delete", KIND, target.name, "its budget is spent (spec.budget, action scaleToZero)")] if running else []
        if activator is not None:
            idle = activator.idle_for()
            if running is not None and idle is not None and idle >= spec.scale.idle_seconds:
                return [Action("delete", KIND, target.name, f"idle for {idle:.0f}s (spec.scale.idleSeconds {spec.scale.idle_seconds})")]
            if running is None and not activator.demanded():
                return []  # scaled to zero: the next request asks for a process
        if spec.scale.max_replicas == 0:
            return [Action("delete", KIND, target.name, "scale.maxReplicas is 0")] if running else []
        if not facts.share_root_exists:
            raise PermanentError(
                f"the share root {spec.local.share_root} does not exist or is not a folder; create it or fix spec.local.shareRoot",
                reason="ShareRootNotFound",
            )
        if not facts.model_exists:
            path = Path(spec.local.share_root) / spec.model.path
            raise PermanentError(
                f"the base model folder {path} does not exist; put the model there "
                "or fix spec.model.path (it is relative to spec.local.shareRoot)",
                reason="ModelNotFound",
            )
        if running is None:
            record = facts.record
            if record is not None and record.uid == target.uid:
                lived = facts.now - record.started_at
                if lived < QUICK_DEATH_SECONDS:
                    wait = restart_delay(record.consecutive_failures) - lived
                    if wait > 0:
                        last = facts.log_tail.strip().splitlines()
                        said = f"; its log ends: {last[-1][:200]}" if last else ""
                        raise TemporaryError(
                            f"the serving process exited {lived:.0f}s after starting{said}; restarting in {wait:.0f}s",
                            reason="ServingProcessCrashed",
                            delay=wait,
                        )
                return [Action("create", KIND, target.name, EXITED)]
            return [Action("create", KIND, target.name, "not running")]
        if running.config_hash != self.launch_config(target).hash:
            return [Action("restart", KIND, target.name, "its settings changed")]
        if not running.recorded:
            return [Action("update", KIND, target.name, ADOPT)]
        return []

    # ------------------------------------------------------------------------------ apply

    def apply(self, target: Target, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == ACTIVATOR:
                if action.verb == "create":
                    self._open_activator(target)
                else:
                    self._close_activator(target.name)
                continue
            if action.verb == "delete":
                self._stop_process(target)
                self.folder(target.name).forget_record()  # stopped as asked: not a crash
            elif action.verb == "restart":
                self._stop_process(target)
                self._start(target, crashed=False)
            elif action.verb == "create":
                self._start(target, crashed=action.reason == EXITED)
            elif action.verb == "update":
                self._adopt(target)
            else:
                raise PermanentError(f"the local target cannot {action.verb} a {action.kind}", reason="Unsupported")

    def _activator(self, target: Target) -> Activator | None:
        with self._lock:
            return self._activators.get(target.name)

    def _open_activator(self, target: Target) -> None:
        """The deployment's activator, on the port it had before (kept in its run folder) so
        that its endpoint survives a restart of the daemon; another when that one is taken."""
        folder = self.folder(target.name)
        remembered = folder.path / "activator-port"
        try:
            port = int(remembered.read_text())
        except (OSError, ValueError):
            port = 0
        name = target.name

        def upstream() -> int | None:
            found = find_process(folder.read_record(), target.uid, index=self._markers)
            if found is None:
                return None
            process, record = found
            listening = record.port if record is not None else port_of(process)
            with self._lock:
                known_ready = self._ready_pids.get(name) == process.pid
            if not known_ready:
                ready, _ = self._probe(f"http://127.0.0.1:{listening}" if listening else None)
                if not ready:
                    return None
                with self._lock:
                    self._ready_pids[name] = process.pid
            return listening

        def demand() -> None:
            if self.on_change is not None:
                self.on_change(name)

        try:
            activator = Activator(name, port, upstream=upstream, demand=demand, clock=self.monotonic)
        except OSError:
            activator = Activator(name, 0, upstream=upstream, demand=demand, clock=self.monotonic)
        folder.path.mkdir(parents=True, exist_ok=True)
        remembered.write_text(str(activator.port))
        with self._lock:
            self._activators[name] = activator
        log.info("the activator of %s listens at %s", name, activator.url)

    def _close_activator(self, name: str) -> None:
        with self._lock:
            activator = self._activators.pop(name, None)
        if activator is not None:
            activator.close()

    def _start(self, target: Target, *, crashed: bool) -> None:
        folder = self.folder(target.name)
        previous = folder.read_record()
        # Idempotence: a process may exist that a crash kept us from recording.
        if find_process(previous, target.uid) is not None:
            return
        failures = 0
        if crashed and previous is not None and previous.uid == target.uid:
            lived = self.clock() - previous.started_at
            failures = previous.consecutive_failures + 1 if lived < QUICK_DEATH_SECONDS else 0
        config = self.launch_config(target)
        port = free_loopback_port()
        # The admin token goes in the environment, not the launch config: it is a secret and
        # must not decide whether the settings changed.
        base_env = {**inherited_env(), "LORAPLANE_ADMIN_TOKEN": folder.admin_token()}
        child, create_time = spawn(folder, config, uid=target.uid, port=port, base_env=base_env)
        folder.write_record(
            ProcessRecord(
                uid=target.uid,
                pid=child.pid,
                create_time=create_time,
                port=port,
                config_hash=config.hash,
                started_at=self.clock(),
                consecutive_failures=failures,
            )
        )
        with self._lock:
            self._children[target.name] = child
            self._watched[target.name] = psutil.Process(child.pid)
        log.info("started the serving app for %s (pid %d, port %d)", target.name, child.pid, port)

    def _adopt(self, target: Target) -> None:
        """Record a process that runs with the right settings but has no record."""
        folder = self.folder(target.name)
        found = find_process(folder.read_record(), target.uid)
        if found is None or found[1] is not None:
            return  # gone meanwhile (the next pass starts one), or already recorded
        process, _ = found
        port = port_of(process)
        if port is None:
            raise TemporaryError(f"cannot read the port of the serving process {process.pid}", reason="AdoptionFailed")
        folder.write_record(
            ProcessRecord(
                uid=target.uid,
                pid=process.pid,
                create_time=process.create_time(),
                port=port,
                config_hash=self.launch_config(target).hash,
                started_at=process.create_time(),
            )
        )
        self._watch(target.name, process)
        log.info("adopted the serving app of %s (pid %d)", target.name, process.pid)

    def _stop_process(self, target: Target) -> None:
        folder = self.folder(target.name)
        found = find_process(folder.read_record(), target.uid)
        with self._lock:
            self._watched.pop(target.name, None)
        if found is not None:
            process, _ = found
            log.info("stopping the serving app of %s (pid %d)", target.name, process.pid)
            stop_process(process)
        self._reap(target.name)

    def _reap(self, name: str) -> None:
        with self._lock:
            child = self._children.pop(name, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    # ----------------------------------------------------------------------------- delete

    def delete(self, target: Target) -> bool:
        self._close_activator(target.name)
        self._stop_process(target)
        shutil.rmtree(self.folder(target.name).path, ignore_errors=True)
        if not self.admit(target.spec):  # the share is touched only where the operator allows
            folder = deployment_folder(target.name, target.uid)
            try:
                self.share(target).remove_tree(folder)
            except PermanentError as exc:  # e.g. a link put in its place: left, and said
                log.warning("left %s in the share of %s: %s", folder, target.name, exc.message)
        return True

    def logs(self, target: Target, tail: int) -> str:
        return self.folder(target.name).tail_log(tail)

    # ------------------------------------------------------------------------- adapters

    def share(self, target: Target) -> LocalShare:
        assert target.spec.local is not None
        return LocalShare(Path(target.spec.local.share_root))

    def _process_endpoint(self, target: Target, endpoint: str) -> str | None:
        """Where loraplane itself asks the app: the process's own address (asking through the
        activator would keep the process up, or start it); None while none runs."""
        if self._activator(target) is None:
            return endpoint
        found = find_process(self.folder(target.name).read_record(), target.uid, index=self._markers)
        if found is None:
            return None
        process, record = found
        port = record.port if record is not None else port_of(process)
        return f"http://127.0.0.1:{port}" if port else None

    def adapter_status(self, target: Target, endpoint: str) -> dict:
        direct = self._process_endpoint(target, endpoint)
        if direct is None:
            raise TemporaryError(f"{target.name} is scaled to zero: no serving process to ask", reason="ScaledToZero")
        return self.endpoints.adapter_status(direct, self.folder(target.name).admin_token())

    def adapter_statuses(self, target: Target, endpoint: str, probes: int) -> list[dict]:
        if self._process_endpoint(target, endpoint) is None:
            return []  # scaled to zero: the next process follows the pointer
        return [self.adapter_status(target, endpoint) for _ in range(probes)]

    def reload_adapter(self, target: Target, endpoint: str) -> dict:
        direct = self._process_endpoint(target, endpoint)
        if direct is None:
            return {"status": "following", "message": "scaled to zero: the next process reads the pointer"}
        return self.endpoints.reload_adapter(direct, self.folder(target.name).admin_token())

    def version_endpoint(self, target: Target, endpoint: str, versions: dict[str, str]) -> str | None:
        return endpoint  # one process: it loads a version beside the one serving

    def ask(self, target: Target, endpoint: str, route: str, body: dict, timeout: float) -> AppAnswer:
        return self.endpoints.ask(endpoint, self.folder(target.name).admin_token(), route, body, timeout)

    def _recorded(self) -> Iterator[tuple[str, psutil.Process | None]]:
        """(deployment, its running process or None) for every run folder with a record."""
        if not self.run_root.is_dir():
            return
        for folder_path in sorted(p for p in self.run_root.iterdir() if p.is_dir()):
            record = RunFolder(self.run_root, folder_path.name).read_record()
            if record is not None:
                found = find_process(record, record.uid)
                yield folder_path.name, found[0] if found is not None else None

    def stop_all(self) -> None:
        """Stop every serving process this provider's run folder knows (``serve --stop-children``)."""
        for name, process in self._recorded():
            if process is not None:
                log.info("stopping the serving app of %s (pid %d)", name, process.pid)
                stop_process(process)
            self._reap(name)

    def left_running(self) -> list[str]:
        return [f"{name} (pid {process.pid})" for name, process in self._recorded() if process is not None]

    # --------------------------------------------------------------------------- monitor

    def _watch(self, name: str, process: psutil.Process) -> None:
        with self._lock:
            known = self._watched.get(name)
            if known is None or known.pid != process.pid:
                self._watched[name] = process

    def start(self) -> None:
        """Watch the processes: a death wakes the reconciler at once, not at the next resync."""
        self._stop.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="local-monitor", daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        with self._lock:
            activators, self._activators = list(self._activators.values()), {}
        for activator in activators:
            activator.close()
        self.endpoints.close()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.monitor_interval):
            with self._lock:
                watched = list(self._watched.items())
                children = dict(self._children)
            for name, child in children.items():
                if child.poll() is not None:  # reaps our own children: no zombies
                    with self._lock:
                        if self._children.get(name) is child:
                            del self._children[name]
            for name, process in watched:
                try:
                    alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
                except psutil.Error:
                    alive = False
                if not alive:
                    with self._lock:
                        if self._watched.get(name) is process:
                            del self._watched[name]
                    log.warning("the serving app of %s (pid %d) exited", name, process.pid)
                    if self.on_change is not None:
                        self.on_change(name)


# What a serving process inherits of the daemon's environment: what finds Python, its packages,
# the locale, the GPU and the model libraries' own settings. Nothing else: the daemon's
# environment holds its own secrets (an Azure client secret, a database URL with a password,
# LORAPLANE_TOKEN), and a serving app answers whoever reaches it.
INHERITED_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH"})
INHERITED_PREFIXES = (
    "PYTHON",
    "LC_",
    "CUDA_",
    "NVIDIA_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "TOKENIZERS_",
    "COVERAGE_",
)


def inherited_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The part of the daemon's environment a serving process is given."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in INHERITED_NAMES or k.startswith(INHERITED_PREFIXES)}


def _is_dir(path: Path) -> bool:
    """A folder that is there and can be looked into: one this user may not enter is no
    share (and what the OS said about it is not repeated to whoever asked)."""
    try:
        return path.is_dir() and os.access(path, os.R_OK | os.X_OK)
    except OSError:
        return False
