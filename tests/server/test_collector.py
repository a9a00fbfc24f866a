"""tierwise.server.collector: the serving process's start-up objects frozen out of the collector's walks, and
given back to it while a reload replaces the engine. Each case runs in a fresh interpreter (the collector's
state is the process's)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVING = """
import gc
from tierwise.server import collector
collector.tune_for_serving()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen  # the interpreter's and tierwise's modules at least
collector.thaw()
assert gc.get_freeze_count() == 0
collector.refreeze()
assert gc.get_freeze_count() > 1000
"""

LIBRARY = """
import gc
from tierwise.server import collector
collector.thaw()
collector.refreeze()
assert gc.get_freeze_count() == 0  # not serving: left as it is
"""


@pytest.mark.parametrize("code", [SERVING, LIBRARY], ids=["serving", "library"])
def test_freezing_follows_serving_and_reloads(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
