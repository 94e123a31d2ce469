"""Window graphs of any-length models, built in the background while the server already serves.

Cutting a window's DEM is pure Python (seconds per model at d=9); done in the server's process it
would hold the GIL against every call. A spawned helper process cuts them, the server's process
only builds the matching graphs from the cut DEMs, and a model's health turns SERVING when its
graphs are ready; until then a stream to it is refused at once, naming why. Models of the same
family and window sizes (the matching and correlated-matching twins) share one cut.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from decoder.spec import CodeSpec
from decoder.windowed import SlidingWindowDecoder, WindowGraph, WindowKey
from server.models import ServedModel

log = logging.getLogger(__name__)


def cut_windows(spec: CodeSpec, commit: int, buffer: int) -> dict[WindowKey, WindowGraph]:
    """The cut DEMs of a window family (runs in the helper process)."""
    return SlidingWindowDecoder(spec, commit=commit, buffer=buffer).cut_windows()


class WindowWarmer:
    """Prepares every any-length model of ``models`` in a background thread (smallest distance
    first), calling ``ready(name)`` as each is done."""

    def __init__(self, models: dict[str, ServedModel], ready: Callable[[str], None]):
        self.ready = ready
        self.groups: dict[tuple, list[ServedModel]] = {}
        for model in sorted((m for m in models.values() if m.windowed is not None),
                            key=lambda m: (m.spec.distance, m.name)):
            windowed = model.windowed
            self.groups.setdefault((windowed.family, windowed.commit, windowed.buffer), []).append(model)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        self._thread = threading.Thread(target=self._run, name="window-warmer", daemon=True)

    def start(self) -> "WindowWarmer":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every model is prepared (or the warmer stopped); True if it finished."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop warming: the cuts not started are dropped; models not prepared stay NOT_SERVING."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        try:
            if not self.groups:
                return
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            cuts = {key: self._pool.submit(cut_windows, *key) for key in self.groups}
            for key, models in self.groups.items():
                graphs = cuts[key].result()
                for model in models:
                    if self._stop.is_set():
                        return
                    model.windowed.prepare(graphs)
                    self.ready(model.name)
            self._pool.shutdown(wait=False)
        except Exception:  # the helper process died: the models stay NOT_SERVING, and the log says why
            if not self._stop.is_set():
                log.exception("building the window graphs of the any-length models failed")
        finally:
            self._done.set()
