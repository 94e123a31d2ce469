"""The ``nqec.v1.Decoder`` servicer: request validation, batching, deadlines, streaming."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from decoder.events import pack_bits, unpack_bits
from decoder.interface import Stage
from server.batching import BatcherClosed, DeadlineExpired, MicroBatcher
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.metrics import ServerMetrics
from server.models import ServedModel, model_info
from server.streams import StreamError, open_experiments


MAX_NAME_IN_MESSAGE = 64  # characters of a client-supplied name echoed in an error


def quoted(name: str) -> str:
    """A client-supplied name for an error message, cut short so the message stays small."""
    if len(name) <= MAX_NAME_IN_MESSAGE:
        return repr(name)
    return f"{name[:MAX_NAME_IN_MESSAGE]!r}... ({len(name):,} characters)"


def spare_bits_set(packed: np.ndarray, num_bits: int) -> bool:
    """Whether any padding bit past ``num_bits`` is set in bit-packed rows."""
    spare = 8 * packed.shape[1] - num_bits
    return bool(spare and np.any(packed[:, -1] >> (8 - spare)))


class RequestError(Exception):
    """A bad request: its gRPC status code and a message naming what was expected."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class _Admission:
    """A counter with a ceiling: shots in flight, or open streams."""

    def __init__(self, limit: int):
        self.limit = limit
        self.value = 0
        self._lock = threading.Lock()

    def take(self, amount: int = 1) -> bool:
        with self._lock:
            if self.value + amount > self.limit:
                return False
            self.value += amount
            return True

    def give(self, amount: int = 1) -> None:
        with self._lock:
            self.value -= amount


class DecoderService(pb2_grpc.DecoderServicer):
    """Validation, admission control (shots in flight, open streams), batching and streaming."""

    def __init__(self, models: dict[str, ServedModel], metrics: ServerMetrics, max_batch: int = 4096,
                 max_wait_s: float = 0.0, max_shots_per_request: int = 1 << 16,
                 max_inflight_shots: int = 1 << 18, max_streams: int = 16):
        self.models = models
        self.metrics = metrics
        self.max_shots = max_shots_per_request
        self.inflight_shots = _Admission(max_inflight_shots)
        self.open_streams = _Admission(max_streams)
        self.batchers = {name: MicroBatcher(m.decoder, max_batch, max_wait_s) for name, m in models.items()
                         if m.decoder is not None}
        self.model_metrics = {name: metrics.for_model(name) for name in models}

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()

    # -- helpers -------------------------------------------------------------------------
    def _model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {quoted(name)}; ListModels names the served ones")
        return self.models[name]

    def _fail(self, context, method: str, error: RequestError):
        self.metrics.errors.labels(method, error.code.name).inc()
        context.abort(error.code, str(error))

    def _decode(self, model: ServedModel, events: np.ndarray, deadline: float | None):
        """Decode through the model's batcher; raises RequestError when the server is full, on
        deadline, on shutdown or on model failure."""
        if not self.inflight_shots.take(len(events)):
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"server busy: {self.inflight_shots.value:,} shots in flight, {len(events):,} more would "
                               f"pass the limit of {self.inflight_shots.limit:,} (--max-inflight-shots); retry later")
        try:
            outcome = self.batchers[model.name].decode(events, deadline)
        except DeadlineExpired:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the shots were decoded")
        except BatcherClosed:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        except Exception as exc:
            raise RequestError(grpc.StatusCode.INTERNAL, f"model {model.name!r} failed: {exc}") from exc
        finally:
            self.inflight_shots.give(len(events))
        if deadline is not None and time.monotonic() > deadline:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while decoding")
        metrics = self.model_metrics[model.name]
        metrics.decode_seconds.observe(outcome.decode_seconds)
        metrics.shots.inc(len(events))
        if model.kind != "matching":
            metrics.fallbacks.inc(int(np.sum(outcome.result.stage == Stage.MATCHING)))
        return outcome

    @staticmethod
    def _deadline(context) -> float | None:
        """The call's deadline on the monotonic clock; None when the client set none (gRPC reports ~infinity)."""
        remaining = context.time_remaining()
        return None if remaining is None or remaining > 1e6 else time.monotonic() + remaining

    # -- RPCs ----------------------------------------------------------------------------
    def Decode(self, request, context):
        start = time.perf_counter()
        try:
            model = self._model(request.model)
            events = self._unpack_request(model, request)
            outcome = self._decode(model, events, self._deadline(context))
        except RequestError as error:
            return self._fail(context, "Decode", error)
        result = outcome.result
        self.model_metrics[model.name].unary_seconds.observe(time.perf_counter() - start)
        return pb2.DecodeResponse(observable_flips=pack_bits(result.observables).tobytes(),
                                  stages=result.stage.astype(np.uint8).tobytes(), num_shots=len(events),
                                  decode_seconds=outcome.decode_seconds)

    def _unpack_request(self, model: ServedModel, request) -> np.ndarray:
        if model.windowed is not None:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"model {model.name!r} decodes experiments of any length, slice by slice: use DecodeStream")
        shots, width = request.num_shots, model.detector_bytes
        if shots == 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "empty request: num_shots must be >= 1")
        if shots > self.max_shots:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{shots} shots in one request; the limit is {self.max_shots}")
        if len(request.detection_events) != shots * width:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"model {model.name!r} expects {shots} x {width} bytes of bit-packed detection events "
                               f"({model.decoder.num_detectors} detectors per shot), got {len(request.detection_events)}")
        events = np.frombuffer(request.detection_events, dtype=np.uint8).reshape(shots, width)
        if spare_bits_set(events, model.decoder.num_detectors):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"padding bits past detector {model.decoder.num_detectors} must be zero")
        return events

    def DecodeStream(self, request_iterator, context):
        if not self.open_streams.take():
            return self._fail(context, "DecodeStream", RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.open_streams.limit} streams are open, the server's limit "
                "(--max-streams); close one or retry later"))
        try:
            yield from self._stream(request_iterator, context)
        finally:
            self.open_streams.give()

    def _stream(self, request_iterator, context):
        experiments: dict = {}  # Round messages: one experiment each
        blocks: dict = {}  # RoundBlock messages: many experiments each
        for request in request_iterator:
            start = time.perf_counter()
            finished_experiments: dict[str, list] = {}
            finished_blocks: dict[str, list] = {}
            results, block_results = [], []
            for round_ in request.rounds:
                results += self._add_round(experiments, finished_experiments, "experiment", round_.experiment_id,
                                           round_.model, 1, round_.events, round_.last, round_.stream_corrections)
            for block in request.blocks:
                block_results += self._add_round(blocks, finished_blocks, "block", block.block_id, block.model,
                                                 block.num_experiments, block.events, block.last,
                                                 block.stream_corrections)
            deadline = self._deadline(context)
            for key, result, seconds, error in self._decode_finished(finished_experiments, deadline):
                results.append(pb2.ExperimentResult(experiment_id=key, error=error) if error else pb2.ExperimentResult(
                    experiment_id=key, observable_flips=pack_bits(result.observables)[0].tobytes(),
                    stage=int(result.stage[0]), decode_seconds=seconds))
            for key, result, seconds, error in self._decode_finished(finished_blocks, deadline):
                block_results.append(pb2.BlockResult(block_id=key, error=error) if error else pb2.BlockResult(
                    block_id=key, observable_flips=pack_bits(result.observables).tobytes(),
                    stages=result.stage.astype(np.uint8).tobytes(), decode_seconds=seconds))
            if results or block_results:
                self.metrics.request_seconds.labels("DecodeStream", "").observe(time.perf_counter() - start)
                yield pb2.StreamResponse(results=results, blocks=block_results)
        unfinished = [pb2.ExperimentResult(experiment_id=key, error=self._cut_short("experiment", key, state))
                      for key, state in experiments.items()]
        unfinished_blocks = [pb2.BlockResult(block_id=key, error=self._cut_short("block", key, state))
                             for key, state in blocks.items()]
        if unfinished or unfinished_blocks:
            yield pb2.StreamResponse(results=unfinished, blocks=unfinished_blocks)

    @staticmethod
    def _cut_short(what: str, key: str, state) -> str:
        return (f"the stream ended after {state.progress} of {what} {quoted(key)}: no answer "
                "(mark its final round with last=true)")

    def _add_round(self, pending: dict, finished: dict, what: str, key: str, model_name: str, experiments: int,
                   events: bytes, last: bool, stream_corrections: bool) -> list:
        """Record one round of an experiment (``experiments`` = 1) or a block. Returns the result
        messages it produced at once: an error (the experiment is then forgotten), a committed
        correction or a windowed answer. Fixed-length experiments that are complete go to
        ``finished`` to be decoded in one batch per model."""
        message = pb2.ExperimentResult if what == "experiment" else pb2.BlockResult
        ident = {f"{what}_id": key}
        start = time.perf_counter()
        try:
            state = self._state(pending, what, key, model_name, experiments, stream_corrections)
            bits = self._round_bits(state, what, key, events, last)
            update = state.add(bits, last)
        except StreamError as error:
            pending.pop(key, None)
            return [message(**ident, error=f"{what} {quoted(key)}: {error}" if key else str(error))]
        if update.complete is not None:
            finished.setdefault(state.model.name, []).append((key, update.complete))
        if last:
            del pending[key]
        flips = update.final if update.final is not None else update.partial
        if flips is None:
            return []
        packed = pack_bits(flips)
        return [message(**ident, observable_flips=packed[0].tobytes() if what == "experiment" else packed.tobytes(),
                        partial=update.partial is not None, rounds_committed=update.rounds_committed,
                        decode_seconds=time.perf_counter() - start)]

    def _state(self, pending: dict, what: str, key: str, model_name: str, experiments: int, stream_corrections: bool):
        if not key:
            raise StreamError(f"{what}_id must be non-empty")
        if key in pending:
            return pending[key]
        if model_name not in self.models:
            raise StreamError(f"unknown model {quoted(model_name)} on its first round")
        model = self.models[model_name]
        if not model.detectors_per_round:
            raise StreamError(f"model {model_name!r} does not support streaming")
        if not 1 <= experiments <= self.max_shots:
            raise StreamError(f"must hold 1 to {self.max_shots} experiments, got {experiments}")
        pending[key] = open_experiments(model, experiments, stream_corrections)
        return pending[key]

    @staticmethod
    def _round_bits(state, what: str, key: str, events: bytes, last: bool) -> np.ndarray:
        index, size = state.received, state.slice_size(last)
        width = (size + 7) // 8
        if len(events) != state.experiments * width:
            raise StreamError(f"round {index} has {size} detectors per experiment: expected "
                              f"{state.experiments} x {width} bytes, got {len(events)}")
        packed = np.frombuffer(events, np.uint8).reshape(state.experiments, width)
        if spare_bits_set(packed, size):
            raise StreamError(f"round {index}: padding bits past detector {size} must be zero")
        return unpack_bits(packed, size)

    def _decode_finished(self, finished: dict[str, list], deadline):
        """Decode finished experiments or blocks, one batch per model; yields
        ``(key, DecodeResult of its rows, decode seconds, error message)``."""
        for name, entries in finished.items():
            try:
                outcome = self._decode(self.models[name], pack_bits(np.concatenate([bits for _, bits in entries])),
                                       deadline)
            except RequestError as error:
                yield from ((key, None, 0.0, str(error)) for key, _ in entries)
                continue
            offset = 0
            for key, bits in entries:
                yield key, outcome.result.rows(slice(offset, offset + len(bits))), outcome.decode_seconds, ""
                offset += len(bits)

    def ListModels(self, request, context):
        return pb2.ListModelsResponse(models=[model_info(m, pb2, self.max_shots) for m in self.models.values()])

    def GetModelInfo(self, request, context):
        try:
            return model_info(self._model(request.model), pb2, self.max_shots)
        except RequestError as error:
            return self._fail(context, "GetModelInfo", error)
