"""One BLAS thread for the proxy.

The learned router's products are small (one query against a few thousand prompts); a BLAS thread pool gains
nothing on them, and its idle threads spin on the cores the event loop needs. Measured with
bench/gateways.py on 2 cores: the router's CPU per request fell from 1.5-5.7 ms to 0.6-1.0 ms. `tierwise
serve` sets this before anything imports numpy; a library user's process is left as it is.
"""

from __future__ import annotations

import os
import sys

_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_blas_thread() -> None:
    """Limit BLAS to one thread, unless the environment already says how many (that choice is kept)."""
    if any(v in os.environ for v in _VARIABLES):
        return
    for variable in _VARIABLES:
        os.environ[variable] = "1"
    if "numpy" in sys.modules:  # loaded already: its pool started with the old setting
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
