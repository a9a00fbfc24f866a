"""`tierwise serve` runs BLAS on one thread (the router's small products gain nothing from a pool)."""

from __future__ import annotations

import os
import subprocess
import sys


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


PROBE = (
    "from tierwise.server.threads import single_blas_thread\n"
    "{before}"
    "single_blas_thread()\n"
    "import numpy, threadpoolctl\n"
    "print(max(p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'))\n"
)


def test_one_blas_thread_before_and_after_numpy_loads() -> None:
    assert run(PROBE.format(before="")) == "1"
    assert run(PROBE.format(before="import numpy\n")) == "1"


def test_an_explicit_setting_is_kept() -> None:
    assert run(PROBE.format(before=""), OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2") == "2"
