"""The ``nqec.v1.Decoder`` servicer: request validation, batching, deadlines, streaming."""

from __future__ import annotations

import time

import grpc
import numpy as np

from decoder.events import pack_bits, unpack_bits
from decoder.interface import Stage
from server.batching import DeadlineExpired, MicroBatcher
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.metrics import ServerMetrics
from server.models import ServedModel, model_info


class RequestError(Exception):
    """A bad request: its gRPC status code and a message naming what was expected."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class DecoderService(pb2_grpc.DecoderServicer):
    def __init__(self, models: dict[str, ServedModel], metrics: ServerMetrics, max_batch: int = 4096,
                 max_wait_s: float = 0.0, max_shots_per_request: int = 1 << 16):
        self.models = models
        self.metrics = metrics
        self.max_shots = max_shots_per_request
        self.batchers = {name: MicroBatcher(m.decoder, max_batch, max_wait_s) for name, m in models.items()}
        self.model_metrics = {name: metrics.for_model(name) for name in models}

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()

    # -- helpers -------------------------------------------------------------------------
    def _model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; ListModels names the served ones")
        return self.models[name]

    def _fail(self, context, method: str, error: RequestError):
        self.metrics.errors.labels(method, error.code.name).inc()
        context.abort(error.code, str(error))

    def _decode(self, model: ServedModel, events: np.ndarray, deadline: float | None):
        """Decode through the model's batcher; raises RequestError on deadline or model failure."""
        try:
            outcome = self.batchers[model.name].decode(events, deadline)
        except DeadlineExpired:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the shots were decoded")
        except Exception as exc:
            raise RequestError(grpc.StatusCode.INTERNAL, f"model {model.name!r} failed: {exc}") from exc
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
        spare_bits = 8 * width - model.decoder.num_detectors
        if spare_bits and np.any(events[:, -1] >> (8 - spare_bits)):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"padding bits past detector {model.decoder.num_detectors} must be zero")
        return events

    def DecodeStream(self, request_iterator, context):
        pending: dict[str, tuple[ServedModel, list[np.ndarray]]] = {}
        for request in request_iterator:
            start = time.perf_counter()
            results, finished = [], {}
            for round_ in request.rounds:
                error = self._add_round(pending, finished, round_)
                if error:
                    pending.pop(round_.experiment_id, None)
                    results.append(pb2.ExperimentResult(experiment_id=round_.experiment_id, error=error))
            results += self._decode_finished(finished, self._deadline(context))
            if results:
                self.metrics.request_seconds.labels("DecodeStream", "").observe(time.perf_counter() - start)
                yield pb2.StreamResponse(results=results)

    def _add_round(self, pending, finished, round_) -> str:
        """Record one round; returns an error message, or '' when accepted."""
        key = round_.experiment_id
        if not key:
            return "experiment_id must be non-empty"
        if key not in pending:
            if round_.model not in self.models:
                return f"unknown model {round_.model!r} on the first round of experiment {key!r}"
            if not self.models[round_.model].detectors_per_round:
                return f"model {round_.model!r} does not support streaming"
            pending[key] = (self.models[round_.model], [])
        model, rounds = pending[key]
        index = len(rounds)
        expected = model.detectors_per_round
        if index >= len(expected):
            return f"experiment {key!r} has only {len(expected)} rounds"
        if len(round_.events) != (expected[index] + 7) // 8:
            return (f"round {index} of experiment {key!r} has {expected[index]} detectors: expected "
                    f"{(expected[index] + 7) // 8} bytes, got {len(round_.events)}")
        rounds.append(unpack_bits(np.frombuffer(round_.events, np.uint8).reshape(1, -1), expected[index])[0])
        if round_.last:
            if index + 1 != len(expected):
                return f"experiment {key!r} ended after {index + 1} rounds; model {model.name!r} needs {len(expected)}"
            finished.setdefault(model.name, []).append((key, np.concatenate(rounds)))
            del pending[key]
        return ""

    def _decode_finished(self, finished, deadline) -> list:
        results = []
        for name, experiments in finished.items():
            model = self.models[name]
            events = pack_bits(np.stack([bits for _, bits in experiments]))
            try:
                outcome = self._decode(model, events, deadline)
            except RequestError as error:
                results += [pb2.ExperimentResult(experiment_id=key, error=str(error)) for key, _ in experiments]
                continue
            flips = pack_bits(outcome.result.observables)
            for row, (key, _) in enumerate(experiments):
                results.append(pb2.ExperimentResult(experiment_id=key, observable_flips=flips[row].tobytes(),
                                                    stage=int(outcome.result.stage[row]),
                                                    decode_seconds=outcome.decode_seconds))
        return results

    def ListModels(self, request, context):
        return pb2.ListModelsResponse(models=[model_info(m, pb2) for m in self.models.values()])

    def GetModelInfo(self, request, context):
        try:
            return model_info(self._model(request.model), pb2)
        except RequestError as error:
            return self._fail(context, "GetModelInfo", error)
