"""Window graphs of any-length models, built in the background while the server already serves.

Cutting a window's DEM (and, for guided windows, its edge table and weights) is pure Python
(seconds per model at d=9); done in the server's process it would hold the GIL against every
call. A spawned helper process runs each decoder's cutting recipe (``SlidingWindowDecoder.cutter``),
the server's process only builds the matchers from the result, and a model's health turns SERVING
when its graphs are ready; until then a stream to it is refused at once, naming why. Decoders with
equal recipes (the matching and correlated-matching twins; bundles sharing a network geometry) share
one cut.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable

from server.models import ServedModel

log = logging.getLogger(__name__)


def _cut_families(recipes: list[tuple], results) -> None:
    """Run each decoder's cutting recipe in turn and send its result as it is done (the helper process)."""
    for function, arguments in recipes:
        results.send(function(*arguments))
    results.close()


class WindowWarmer:
    """Prepares every any-length model of ``models`` in a background thread (smallest distance
    first), calling ``ready(name)`` as each is done."""

    def __init__(self, models: dict[str, ServedModel], ready: Callable[[str], None]):
        self.ready = ready
        self.groups: dict[tuple, list[ServedModel]] = {}
        for model in sorted((m for m in models.values() if m.windowed is not None),
                            key=lambda m: (m.spec.distance, m.name)):
            self.groups.setdefault(model.windowed.cutter(), []).append(model)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._process = None
        self._thread = threading.Thread(target=self._run, name="window-warmer", daemon=True)

    def start(self) -> "WindowWarmer":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every model is prepared (or the warmer stopped); True if it finished."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop warming (the helper process is ended); models not prepared stay NOT_SERVING."""
        self._stop.set()
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()

    def _run(self) -> None:
        try:
            if not self.groups:
                return
            context = multiprocessing.get_context("spawn")
            receiver, sender = context.Pipe(duplex=False)
            self._process = context.Process(target=_cut_families, args=(list(self.groups), sender),
                                            name="nqec-window-cutter", daemon=True)
            self._process.start()
            sender.close()
            for models in self.groups.values():
                while not receiver.poll(0.2):
                    if self._stop.is_set():
                        return
                    if not self._process.is_alive() and not receiver.poll():
                        raise RuntimeError(f"the window-cutting process ended with code {self._process.exitcode}")
                graphs = receiver.recv()
                for model in models:
                    if self._stop.is_set():
                        return
                    model.windowed.prepare(graphs)
                    self.ready(model.name)
            self._process.join(timeout=5)
        except Exception:  # the helper process died: the models stay NOT_SERVING, and the log says why
            if not self._stop.is_set():
                log.exception("building the window graphs of the any-length models failed")
        finally:
            self._done.set()
