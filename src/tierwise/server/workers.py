"""Several worker processes on one port: ``tierwise serve --workers N`` (or ``server.workers``).

uvicorn's supervisor starts N processes that share the listening socket (the kernel hands each new
connection to one of them). Each worker builds the app itself (``app``, the factory uvicorn calls in it) from
the config file the parent names in ``TIERWISE_WORKER_CONFIG`` (empty: the embedded demo config), opens the
store itself and runs its own event loop, store writer, circuit breakers and shadow comparisons: it is a
replica, as a second ``tierwise serve`` would be, so store keys' budgets and rate limits are shared through
the store as they are between replicas (docs/keys.md).

What the workers share besides the store:

- **Metrics**: prometheus_client's multiprocess mode. The parent makes an empty directory and names it in
  ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client; every worker's counters and
  histograms go to files there, and ``GET /metrics``, whichever worker answers, sums them over all workers,
  those restarted or gone included. Each worker also copies its own circuit and shadow state into gauges
  there every second (``publish_state``), combined as ``tierwise.metrics.WORKER_MODES`` says; a stopping
  worker's live ones leave the sums (``stopped``).
- **Reloads**: ``SIGHUP`` to the parent (the supervisor) restarts the workers one by one, each new one
  ready before the old one stops, and each reads the config file again. ``POST /v1/tierwise/admin/reload``
  reloads the worker that answers and then, with the SQLite store, sends the parent that ``SIGHUP`` so that
  the others follow; with PostgreSQL the config version it publishes reaches them as it reaches replicas.
- **Shutdown**: ``SIGTERM``/``SIGINT`` to the parent stops every worker gracefully (requests in flight
  finish within ``server.shutdown_grace_s``, every record is written).

Per worker, not shared: the shadow comparisons' concurrency bound (so the host's is N times the config's)
and the circuit breakers. The shadow comparisons' daily spend cap is the store's, as the keys' budgets are.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tierwise.metrics import WORKER_PUBLISH_S

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from tierwise.metrics import Metrics

CONFIG_ENV = "TIERWISE_WORKER_CONFIG"
WORKERS_ENV = "TIERWISE_WORKERS"
SUPERVISOR_ENV = "TIERWISE_SUPERVISOR_PID"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
FACTORY = "tierwise.server.workers:app"
# How long a worker may take to start in a rolling restart before the supervisor gives up on it (seconds).
STARTUP_TIMEOUT_S = 60


def prepare(config_path: Path | None, workers: int) -> None:
    """In the parent, before uvicorn starts the workers: the environment they inherit (the config path, the
    number of workers, the supervisor's pid, and a fresh metrics directory, removed at exit)."""
    os.environ[CONFIG_ENV] = str(config_path.resolve()) if config_path is not None else ""
    os.environ[WORKERS_ENV] = str(workers)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    directory = tempfile.mkdtemp(prefix="tierwise-metrics-")
    os.environ[METRICS_ENV] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def count() -> int:
    """How many workers this process is one of (1 outside ``serve --workers``)."""
    try:
        return max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def restart_all() -> bool | None:
    """Ask the supervisor to restart every worker (each reads the config again): True when asked, None when
    this process is not one of several workers, False when its supervisor is gone (the worker was orphaned:
    nobody to ask, and the pid may be another process's by now)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if count() < 2 or not supervisor:
        return None
    if os.getppid() != int(supervisor):
        return False
    try:
        os.kill(int(supervisor), signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


async def publish_state(metrics: Metrics) -> None:
    """Every WORKER_PUBLISH_S, this worker's circuit and shadow state into the shared gauges (until
    cancelled)."""
    while True:
        metrics.publish_worker_state()
        await asyncio.sleep(WORKER_PUBLISH_S)


def stopped() -> None:
    """A worker stopping: its live gauges (breakers open, comparisons running, the day's spend) no longer
    count; its counts stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def app() -> Starlette:
    """The app of one worker (uvicorn calls this in each worker process)."""
    from tierwise.config import load_config
    from tierwise.server.app import create_app
    from tierwise.server.collector import tune_for_serving
    from tierwise.store import open_store

    path = os.environ.get(CONFIG_ENV) or None
    config = load_config(path)
    built = create_app(config, store=open_store(config.store), config_path=Path(path) if path else None)
    tune_for_serving()  # as serve does for one process
    return built
