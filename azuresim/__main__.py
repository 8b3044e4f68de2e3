"""``python -m azuresim``: run the Azure simulator until interrupted, and say where it is.

Each simulator keeps its CA bundle and certificate in a folder of its own (``--workdir``;
by default ``SHARE_ROOT/.azure-sim`` with ``--share-root``, else a new folder under
``./.azure-sim``), so that two started from the same place never overwrite each other's CA.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from azuresim.server import AzureSimulator, WorkdirInUse


def _workdir(given: Path | None, share_root: Path | None) -> Path:
    if given is not None:
        return given.resolve()
    if share_root is not None:
        return (share_root / ".azure-sim").resolve()
    base = Path(".azure-sim")
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="sim-", dir=base)).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m azuresim", description="Run the Azure simulator (ARM and Azure Files over HTTPS on loopback)."
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--workdir", type=Path, help="where its CA bundle and certificate go (a folder of its own; see above)")
    parser.add_argument(
        "--share-root", type=Path, help="where file shares live, one folder each: DIR/ACCOUNT/SHARE (default: WORKDIR/shares)"
    )
    parser.add_argument("--lro-delay", type=float, default=1.0, help="seconds a long-running operation takes")
    parser.add_argument(
        "--no-run-containers",
        dest="run_containers",
        action="store_false",
        help="do not run container apps' revisions as local serving processes",
    )
    parser.add_argument(
        "--standin-replicas",
        action="store_true",
        help="answer for every app as a healthy replica instead of running it (fleets); needs --no-run-containers",
    )
    parser.add_argument(
        "--arm-limits", action="store_true", help="apply ARM's throttling: 429 past 25 reads/s (burst 250) or 10 writes/s (burst 200)"
    )
    args = parser.parse_args(argv)
    if args.standin_replicas and args.run_containers:
        print("error: --standin-replicas answers for the apps instead of running them: add --no-run-containers", file=sys.stderr)
        return 2
    if args.lro_delay < 0 or not 0 <= args.port <= 65535:
        print("error: --lro-delay must be 0 or more, and --port 0 to 65535", file=sys.stderr)
        return 2
    share_root = args.share_root.resolve() if args.share_root else None
    try:
        simulator = AzureSimulator(
            _workdir(args.workdir, share_root),
            port=args.port,
            lro_delay_seconds=args.lro_delay,
            share_root=share_root,
            run_containers=args.run_containers,
            standin_replicas=args.standin_replicas,
            arm_limits=args.arm_limits,
        )
    except WorkdirInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    simulator.start()
    print(f"Azure simulator at {simulator.url}")
    print(f"CA bundle: {simulator.ca_bundle}")
    print(f"file shares: {simulator.share_root}/ACCOUNT/SHARE")
    print(
        f"point loraplane at it: LORAPLANE_AZURE_ARM_URL={simulator.url} LORAPLANE_AZURE_CA_BUNDLE={simulator.ca_bundle} LORAPLANE_AZURE_CREDENTIAL=static"
    )
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
