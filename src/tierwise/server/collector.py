"""The garbage collector of a serving process.

CPython's cyclic collector walks its oldest generation, every object the process holds, once every hundred
collections of the youngest: with the config, the router's vocabulary and arrays and the modules, some 70,000
objects for the bench's learned router, a pause of tens of milliseconds on the request path every couple of
thousand requests. None of those start-up objects is garbage that only the collector can find while they
serve.

``tierwise serve`` calls ``tune_for_serving`` once the app is built: one collection, then ``gc.freeze()``,
which moves what is left out of every later collection (frozen objects are still freed as usual when nothing
refers to them). A reload replaces the engine: ``thaw`` gives the collector the frozen objects back, so that
the old engine can be collected once it is retired, and ``refreeze`` freezes again after that. A library
user's process is left as it is (both do nothing there).
"""

from __future__ import annotations

import gc

_serving = False


def tune_for_serving() -> None:
    """Collect once, then freeze what is left out of later collections (see the module)."""
    global _serving
    _serving = True
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """An engine is being replaced: let the collector see every object again (the old engine among them)."""
    if _serving:
        gc.unfreeze()


def refreeze() -> None:
    """No replaced engine is left: collect what they left, and freeze the rest again."""
    if _serving:
        gc.collect()
        gc.freeze()
