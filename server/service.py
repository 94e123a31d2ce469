"""The ``nqec.v1.Decoder`` servicer: request validation, batching, deadlines, streaming."""

from __future__ import annotations

import functools
import logging
import time

import grpc
import numpy as np

from decoder.events import pack_bits
from decoder.interface import Stage
from server.batching import BatcherClosed, CallerGone, DeadlineExpired, MicroBatcher
from server.config import ServerConfig
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.metrics import ServerMetrics
from server.models import ServedModel, model_info
from server.stream_limits import Admission, PerClient, StreamIdle, StreamLedger, idle_limited
from server.streams import StreamError, open_experiments

log = logging.getLogger(__name__)

MAX_NAME_IN_MESSAGE = 64  # characters of a client-supplied name echoed in an error
MAX_ID_CHARS = 256  # longest experiment_id / block_id accepted (each result echoes its id)
# A stream's results go out in responses of at most this many bytes, under gRPC's default 4 MiB
# receive limit: errors for many experiments in one message must not end the whole stream.
MAX_RESPONSE_BYTES = 1 << 20
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


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


class DecoderService(pb2_grpc.DecoderServicer):
    """Validation, admission control (shots in flight, open streams), batching and streaming."""

    def __init__(self, models: dict[str, ServedModel], metrics: ServerMetrics, config: ServerConfig | None = None):
        config = config or ServerConfig()
        self.models = models
        self.metrics = metrics
        self.max_shots = config.max_shots_per_request
        self.inflight_shots = Admission(config.max_inflight_shots)
        self.open_streams = Admission(config.max_streams)
        self.client_streams = PerClient(config.max_streams_per_client)
        self.stream_idle_s = config.stream_idle_s
        self.max_stream_bytes = config.max_stream_bytes
        self.max_stream_experiments = config.max_stream_experiments
        self.batchers = {name: MicroBatcher(m.decoder, config.max_batch, config.max_wait_us / 1e6)
                         for name, m in models.items() if m.decoder is not None}
        self.model_metrics = {name: metrics.for_model(name) for name in models}
        self.adapters: dict = {}  # model name -> server.adapt.AdaptiveModel (--adapt; start_server fills it)

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

    def _decode(self, model: ServedModel, events: np.ndarray, deadline: float | None, context,
                admitted: bool = False):
        """Decode through the model's batcher; raises RequestError when the server is full, on
        deadline, when the caller left, on shutdown or on model failure. ``admitted``: the shots
        are already counted in flight (by the stream that holds them)."""
        release = None
        if not admitted:
            if not self.inflight_shots.take(len(events)):
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"server busy: {self.inflight_shots.value:,} shots in flight, {len(events):,} more "
                                   f"would pass the limit of {self.inflight_shots.limit:,} (--max-inflight-shots); "
                                   "retry later")
            release = functools.partial(self.inflight_shots.give, len(events))
        try:
            outcome = self.batchers[model.name].decode(events, deadline, lambda: not context.is_active(), release)
        except DeadlineExpired:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the shots were decoded")
        except CallerGone:
            raise RequestError(grpc.StatusCode.CANCELLED, "the caller left; its decoding stopped")
        except BatcherClosed:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        except Exception as exc:
            raise RequestError(grpc.StatusCode.INTERNAL, f"model {model.name!r} failed: {exc}") from exc
        if deadline is not None and time.monotonic() > deadline:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while decoding")
        metrics = self.model_metrics[model.name]
        metrics.decode_seconds.observe(outcome.decode_seconds)
        metrics.shots.inc(len(events))
        if model.kind != "matching":
            metrics.fallbacks.inc(int(np.sum(outcome.result.stage == Stage.MATCHING)))
        adapter = self.adapters.get(model.name)
        if adapter is not None:  # --adapt: a queue put; the estimate is made on the adapter's thread
            adapter.observe(events)
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
            outcome = self._decode(model, events, self._deadline(context), context)
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
        peer = context.peer()
        if not self.open_streams.take():
            return self._fail(context, "DecodeStream", RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.open_streams.limit} streams are open, the server's limit "
                "(--max-streams); close one or retry later"))
        if not self.client_streams.take(peer):
            self.open_streams.give()
            return self._fail(context, "DecodeStream", RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"this client already has {self.client_streams.limit} streams "
                "open, the server's limit per client (--max-streams-per-client); close one or retry later"))
        try:
            yield from self._stream(idle_limited(request_iterator, self.stream_idle_s), context)
        except StreamIdle:
            self._fail(context, "DecodeStream", RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the stream sent nothing for {self.stream_idle_s:g} s, the server's "
                "idle limit (--stream-idle-s): it was ended and its open experiments dropped"))
        finally:
            self.client_streams.give(peer)
            self.open_streams.give()

    def _stream(self, request_iterator, context):
        ledger = StreamLedger(self.inflight_shots, self.max_stream_bytes, self.max_stream_experiments)
        try:
            for request in request_iterator:
                yield from self._stream_request(ledger, request, context)
            unfinished = [pb2.ExperimentResult(experiment_id=key, error=self._cut_short(what, key, entry.state))
                          for (what, key), entry in ledger.open.items() if what == "experiment"]
            unfinished_blocks = [pb2.BlockResult(block_id=key, error=self._cut_short(what, key, entry.state))
                                 for (what, key), entry in ledger.open.items() if what == "block"]
            yield from _responses(unfinished, unfinished_blocks)
        finally:
            ledger.close_all()

    def _stream_request(self, ledger: StreamLedger, request, context):
        start = time.perf_counter()
        finished: dict[str, list] = {}
        results, block_results = [], []
        for run in _runs(request.rounds, "experiment_id"):
            results += self._add_rounds(ledger, finished, "experiment", run[0].experiment_id, run[0].model, 1,
                                        [r.events for r in run], run[-1].last, run[0].stream_corrections)
        for run in _runs(request.blocks, "block_id"):
            block_results += self._add_rounds(ledger, finished, "block", run[0].block_id, run[0].model,
                                              run[0].num_experiments, [b.events for b in run], run[-1].last,
                                              run[0].stream_corrections)
        for (what, key), result, seconds, error in self._decode_finished(ledger, finished, self._deadline(context),
                                                                         context):
            fields = dict(error=error) if error else dict(observable_flips=pack_bits(result.observables).tobytes(),
                                                          decode_seconds=seconds)
            if what == "experiment":
                if not error:
                    fields["stage"] = int(result.stage[0])
                results.append(pb2.ExperimentResult(experiment_id=key, **fields))
            else:
                if not error:
                    fields["stages"] = result.stage.astype(np.uint8).tobytes()
                block_results.append(pb2.BlockResult(block_id=key, **fields))
        if results or block_results:
            self.metrics.request_seconds.labels("DecodeStream", "").observe(time.perf_counter() - start)
            yield from _responses(results, block_results)

    @staticmethod
    def _cut_short(what: str, key: str, state) -> str:
        return (f"the stream ended after {state.progress} of {what} {quoted(key)}: no answer "
                "(mark its final round with last=true)")

    def _add_rounds(self, ledger: StreamLedger, finished: dict, what: str, key: str, model_name: str,
                    experiments: int, events: list[bytes], last: bool, stream_corrections: bool) -> list:
        """Record consecutive rounds of an experiment (``experiments`` = 1) or a block, sent in one
        message (``last``: the final one is among them, at the end). Returns the result messages
        they produced at once: an error (the experiment is then closed; its later rounds are
        refused, naming the error), a committed correction or a windowed answer. Fixed-length
        experiments that are complete go to ``finished`` to be decoded in one batch per model."""
        message = pb2.ExperimentResult if what == "experiment" else pb2.BlockResult
        if len(key) > MAX_ID_CHARS:  # refused as it is, never remembered (each result echoes its id)
            return [message(**{f"{what}_id": key[:MAX_ID_CHARS]},
                            error=f"{what}_id must be at most {MAX_ID_CHARS} characters, got {len(key):,}")]
        ident = {f"{what}_id": key}
        start = time.perf_counter()
        state = None
        try:
            entry = self._open_entry(ledger, what, key, model_name, experiments, stream_corrections)
            state = entry.state
            packed = [self._round_packed(state, rows, last and k == len(events) - 1, k) for k, rows in enumerate(events)]
            update = state.add(packed, last)
        except Exception as exc:  # a bad round, a bug or a failing window: this one ends, the stream goes on
            if not isinstance(exc, StreamError):
                log.exception("stream %s %r failed on a round", what, key)
                exc = f"failed on round {state.received if state else 0}: {exc}"
            if key and (what, key) not in ledger.failed:
                ledger.close((what, key), failure=str(exc))
            return [message(**ident, error=f"{what} {quoted(key)}: {exc}" if key else str(exc))]
        if update.complete is not None:
            finished.setdefault(entry.model_name, []).append(((what, key), update.complete))
        elif last:
            ledger.close((what, key))
        flips = update.final if update.final is not None else update.partial
        if flips is None:
            return []
        packed = pack_bits(flips)
        fields = dict(observable_flips=packed[0].tobytes() if what == "experiment" else packed.tobytes(),
                      partial=update.partial is not None, rounds_committed=update.rounds_committed,
                      decode_seconds=time.perf_counter() - start)
        if update.final is not None:  # an any-length model's answer: its windowed decoder's stage
            stage = state.model.windowed.stage
            if what == "block":
                fields["stages"] = np.full(len(flips), stage, np.uint8).tobytes()
            else:
                fields["stage"] = int(stage)
        return [message(**ident, **fields)]

    def _open_entry(self, ledger: StreamLedger, what: str, key: str, model_name: str, experiments: int,
                    stream_corrections: bool):
        """The open experiment (or block) ``key``, opened now if this is its first round."""
        if not key:
            raise StreamError(f"{what}_id must be non-empty")
        entry = ledger.open.get((what, key))
        if entry is not None:
            if model_name and model_name != entry.model_name:
                raise StreamError(f"is already open with model {entry.model_name!r} (duplicate {what}_id?); "
                                  f"this round names {quoted(model_name)}")
            return entry
        if (what, key) in ledger.failed:
            raise StreamError(f"was ended by an earlier error ({ledger.failed[(what, key)]}); "
                              f"send it again under a new {what}_id")
        if not model_name:
            if (what, key) in ledger.ended:
                raise StreamError(f"has already ended (its round with last=true came earlier); a new {what} under "
                                  "this id needs a first round naming its model")
            raise StreamError(f"no open {what} has this id, and a first round must name its model")
        if model_name not in self.models:
            raise StreamError(f"unknown model {quoted(model_name)} on its first round")
        model = self.models[model_name]
        if not model.detectors_per_round:
            raise StreamError(f"model {model_name!r} does not support streaming")
        if model.windowed is not None and not model.windowed.prepared:
            raise StreamError(f"model {model_name!r} is not ready yet: its window graphs are being built, and its "
                              "health says NOT_SERVING until they are; retry when it says SERVING")
        if not 1 <= experiments <= self.max_shots:
            raise StreamError(f"must hold 1 to {self.max_shots} experiments, got {experiments}")
        return ledger.reserve((what, key), open_experiments(model, experiments, stream_corrections), model_name)

    @staticmethod
    def _round_packed(state, events: bytes, last: bool, ahead: int) -> np.ndarray:
        """Round ``ahead`` rounds after the next one, checked and viewed as ``uint8 [experiments, bytes]``."""
        index, size = state.received + ahead, state.slice_size(last, ahead)
        width = (size + 7) // 8
        if len(events) != state.experiments * width:
            first_width = (state.slice_size(False, -state.received) + 7) // 8
            reused = index > 0 and len(events) == state.experiments * first_width
            raise StreamError(f"round {index} has {size} detectors per experiment: expected "
                              f"{state.experiments} x {width} bytes, got {len(events)}"
                              + (" (a first round's size: is this id still open from an earlier one?)" if reused else ""))
        packed = np.frombuffer(events, np.uint8).reshape(state.experiments, width)
        if spare_bits_set(packed, size):
            raise StreamError(f"round {index}: padding bits past detector {size} must be zero")
        return packed

    def _decode_finished(self, ledger: StreamLedger, finished: dict[str, list], deadline, context):
        """Decode finished fixed-length experiments or blocks, one batch per model; yields
        ``(key, DecodeResult of its rows, decode seconds, error message)``. A decode refused for
        a passing reason (busy, deadline, shutdown) leaves them open: the last round can be sent again."""
        for name, entries in finished.items():
            try:
                outcome = self._decode(self.models[name], pack_bits(np.concatenate([bits for _, bits in entries])),
                                       deadline, context, admitted=True)
            except RequestError as error:
                retry = error.code in RETRYABLE  # the experiments stay open, waiting for their last round again
                for key, _ in entries:
                    if not retry:
                        ledger.close(key, failure=str(error))
                    yield key, None, 0.0, str(error) + ("; send its last round again to retry" if retry else "")
                continue
            offset = 0
            for key, bits in entries:
                ledger.close(key)
                yield key, outcome.result.rows(slice(offset, offset + len(bits))), outcome.decode_seconds, ""
                offset += len(bits)

    def ListModels(self, request, context):
        return pb2.ListModelsResponse(models=[model_info(m, pb2, self.max_shots) for m in self.models.values()])

    def GetModelInfo(self, request, context):
        try:
            return model_info(self._model(request.model), pb2, self.max_shots)
        except RequestError as error:
            return self._fail(context, "GetModelInfo", error)


def _runs(entries, key_field: str) -> list[list]:
    """Consecutive entries of one experiment (or block) ``key_field``, split after each final round and
    where a round names a model other than its run's first: each run is added in one call."""
    runs: list[list] = []
    for entry in entries:
        run = runs[-1] if runs else None
        if run is None or run[-1].last or getattr(entry, key_field) != getattr(run[0], key_field) \
                or (entry.model and entry.model != run[0].model):
            runs.append([entry])
        else:
            run.append(entry)
    return runs


def _responses(results: list, blocks: list):
    """The results of one stream message as StreamResponses of at most MAX_RESPONSE_BYTES each (one
    result always fits: ids are capped and a block's answers are a few bytes per experiment)."""
    parts: dict = {"results": [], "blocks": []}
    size = 0
    for field, items in (("results", results), ("blocks", blocks)):
        for item in items:
            item_size = item.ByteSize() + 8  # + the field's tag and length
            if size and size + item_size > MAX_RESPONSE_BYTES:
                yield pb2.StreamResponse(**parts)
                parts, size = {"results": [], "blocks": []}, 0
            parts[field].append(item)
            size += item_size
    if size:
        yield pb2.StreamResponse(**parts)
