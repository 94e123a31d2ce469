"""Service reliability against a real loopback server: no dead models, no thread starvation,
bounded work per request, honest health, clean errors (each case failed before its fix)."""

import socket
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from decoder import CodeSpec, MatchingDecoder, NqecError
from decoder.bundle import Bundle
from decoder.events import pack_bits
from decoder.interface import Decoder
from nqec.cli import main
from server.app import ServerConfig, start_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.models import ServedModel, load_models, matching_model_name

SPEC = CodeSpec(5, 5, 0.003)
MODEL = matching_model_name(SPEC)


class SlowDecoder(Decoder):
    """Matching that sleeps first (or raises ``fail`` once it is set): holds a call in flight."""

    def __init__(self, seconds: float, name: str = "slow"):
        self.inner = MatchingDecoder.from_spec(SPEC)
        self.name = name
        self.num_detectors, self.num_observables = self.inner.num_detectors, self.inner.num_observables
        self.seconds = seconds
        self.fail: BaseException | None = None

    def decode_chunk(self, events):
        time.sleep(self.seconds)
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return self.inner.decode_chunk(events)


@pytest.fixture(scope="module")
def models():
    served = load_models(shipped=False, matching_specs=(SPEC,), any_length_specs=(SPEC,))
    rounds = served[MODEL].detectors_per_round
    served["slow"] = ServedModel("slow", "matching", "matching", SPEC, SlowDecoder(0.3), rounds, {})
    served["fragile"] = ServedModel("fragile", "matching", "matching", SPEC, SlowDecoder(0.0, "fragile"), rounds, {})
    return served


@pytest.fixture(scope="module")
def events():
    return SPEC.circuit().compile_detector_sampler(seed=5).sample(2000, separate_observables=True, bit_packed=True)[0]


@pytest.fixture
def running(models):
    server = start_server(ServerConfig(port=0, max_inflight_shots=1 << 17), models)
    yield server
    server.stop(grace=0)


def _target(server) -> str:
    return f"127.0.0.1:{server.port}"


def _health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_deadline_expiring_in_the_queue_does_not_kill_the_model(running, events):
    """A request that times out while queued used to kill the model's batch worker
    (set_exception on a cancelled future): later queued requests then hung forever."""
    client = DecoderClient([_target(running)])
    client.model_info("slow")
    outcomes = []

    def call(timeout):
        try:
            client.decode("slow", events[:3], timeout=timeout)
            outcomes.append("ok")
        except grpc.RpcError as exc:
            outcomes.append(exc.code())

    first = threading.Thread(target=call, args=(None,))  # decoded inline, holds the model
    second = threading.Thread(target=call, args=(None,))  # queued: the worker waits for the model
    doomed = threading.Thread(target=call, args=(0.05,))  # queued behind it, expires there
    for thread in (first, second, doomed):
        thread.start()
        time.sleep(0.05)
    for thread in (first, second, doomed):
        thread.join()
    assert sorted(map(str, outcomes)) == sorted(map(str, ["ok", "ok", grpc.StatusCode.DEADLINE_EXCEEDED]))
    later = [threading.Thread(target=call, args=(5,)) for _ in range(3)]  # two of these queue
    for thread in later:
        thread.start()
    for thread in later:
        thread.join()
    assert outcomes[3:] == ["ok", "ok", "ok"]
    assert running.service.batchers["slow"].alive and _health(_target(running), "slow") == 1
    client.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker is killed on purpose
def test_a_stopped_worker_is_restarted_and_health_follows(running, events):
    client = DecoderClient([_target(running)])
    fragile = running.service.batchers["fragile"]
    fragile.decoder.fail = SystemExit("worker killed")  # escapes the per-batch guard, ends the thread
    failed = []
    caller = threading.Thread(target=lambda: failed.append(pytest.raises(grpc.RpcError, client.decode, "fragile",
                                                                         events[:2], 5).value.code()))
    with fragile._busy:  # the model is busy: the request goes through the worker's queue
        caller.start()
        deadline = time.monotonic() + 10
        while running.service.inflight_shots.value < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the request has reached the model
        time.sleep(0.1)
    caller.join()
    assert failed == [grpc.StatusCode.INTERNAL]  # answered with an error, not left hanging
    deadline = time.monotonic() + 5
    while fragile.restarts == 0 and time.monotonic() < deadline:  # the health watcher revives it
        time.sleep(0.05)
    assert fragile.alive and fragile.restarts == 1
    assert _health(_target(running), "fragile") == health_pb2.HealthCheckResponse.SERVING
    flips, _, _ = client.decode("fragile", events[:50], timeout=5)
    assert np.array_equal(flips, MatchingDecoder.from_spec(SPEC).decode_batch(events[:50]))
    client.close()


def test_idle_streams_cannot_starve_unary_calls_and_health(running, events):
    """64 idle DecodeStreams used to pin all 32 threads: Decode and health then timed out."""
    release = threading.Event()

    def idle_rounds():
        release.wait(30)
        yield from ()

    channel = grpc.insecure_channel(_target(running))
    stub = pb2_grpc.DecoderStub(channel)
    calls = [stub.DecodeStream(idle_rounds()) for _ in range(64)]
    time.sleep(1.0)
    try:
        client = DecoderClient([_target(running)])
        start = time.perf_counter()
        flips, _, _ = client.decode(MODEL, events[:1], timeout=2)
        decode_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        assert _health(_target(running)) == health_pb2.HealthCheckResponse.SERVING
        health_ms = (time.perf_counter() - start) * 1e3
        assert decode_ms < 100 and health_ms < 100, (decode_ms, health_ms)
        rejected = [c for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(rejected) == 64 - min(running.service.open_streams.limit, running.service.client_streams.limit)
        assert "--max-streams" in rejected[0].details()
        client.close()
    finally:
        release.set()
        for call in calls:
            call.cancel()
        channel.close()


def test_huge_neural_request_stops_at_its_deadline_and_admission_is_bounded(models, events):
    bundle = Bundle.load("transformer-d3")
    served = dict(models)
    served[bundle.name] = ServedModel(bundle.name, "transformer", "transformer", bundle.spec, bundle.decoder(), [], {})
    server = start_server(ServerConfig(port=0, max_inflight_shots=1 << 16), served)
    client = DecoderClient([_target(server)])
    try:
        big = bundle.spec.circuit().compile_detector_sampler(seed=1).sample(1 << 16, bit_packed=True)
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            client.decode(bundle.name, big, timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        retry_until = time.monotonic() + 10  # bounded: a server that never frees the shots fails, not hangs
        while True:  # the abandoned shots leave the server at its next chunk boundary
            try:
                client.decode(bundle.name, big[:100], timeout=5)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < retry_until
                time.sleep(0.05)
        assert time.perf_counter() - start < 3.0  # decoding all 65,536 shots takes ~5 s here
        # Admission: with 65,536 shots in flight on the slow model, one more shot is refused at once.
        holder = threading.Thread(target=lambda: client.decode("slow", np.zeros((1 << 16, 15), np.uint8)))
        holder.start()
        time.sleep(0.1)
        with grpc.insecure_channel(_target(server)) as channel, pytest.raises(grpc.RpcError) as info:
            # a bare stub: DecoderClient would retry the refusal until its deadline
            pb2_grpc.DecoderStub(channel).Decode(pb2.DecodeRequest(model=MODEL, detection_events=events[:1].tobytes(),
                                                                   num_shots=1), timeout=2)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-inflight-shots" in info.value.details()
        holder.join()
    finally:
        client.close()
        server.stop(grace=0)


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_ports_in_use_give_one_line_and_exit_two(models, capsys):
    taken = _busy_port()
    port = taken.getsockname()[1]
    with pytest.raises(NqecError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        start_server(ServerConfig(port=0, metrics_port=port), models)
    assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    assert main(["serve", "--workers", "8", "--max-streams", "8"]) == 2
    assert "--max-streams must be in [0, --workers)" in capsys.readouterr().err
    taken.close()
    from nqec.cli import build_parser

    assert build_parser().parse_args(["serve"]).metrics_port is None  # metrics are opt-in


def test_client_fails_over_and_splits_large_batches(running, capsys):
    down = _busy_port()  # a port that accepts nothing gRPC: UNAVAILABLE
    dead = f"127.0.0.1:{down.getsockname()[1]}"
    down.close()
    up = _target(running)
    for targets in (f"{up},{dead}", f"{dead},{up}"):
        assert main(["client", "decode", "--target", targets, "-d", "5", "-p", "0.003", "--shots", "100000"]) == 0
        assert "agrees with in-process decoding: yes" in capsys.readouterr().out
    client = DecoderClient([dead, up])
    shots = SPEC.circuit().compile_detector_sampler(seed=2).sample(70_000, bit_packed=True)
    flips, _, _ = client.decode(MODEL, shots)  # two requests: 65,536 + 4,464
    assert np.array_equal(flips, MatchingDecoder.from_spec(SPEC).decode_batch(shots))
    client.close()
    assert main(["client", "decode", "--target", f"{dead},{dead}", "-d", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "UNAVAILABLE" in err and "Traceback" not in err


def _rounds(bits, per_round):
    bounds = np.cumsum([0, *per_round])
    return [pack_bits(bits[None, lo:hi])[0].tobytes() for lo, hi in zip(bounds[:-1], bounds[1:])]


def test_stream_errors_are_reported_never_dropped(running, events):
    client = DecoderClient([_target(running)])
    info = client.model_info(MODEL)
    bits = np.unpackbits(events[:1], axis=1, count=120, bitorder="little").astype(bool)[0]
    rounds = _rounds(bits, info.detectors_per_round)
    requests = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="unfinished", model=MODEL, events=rounds[0]),
                                          pb2.Round(experiment_id="x" * 100_000, model=MODEL, events=rounds[0]),
                                          pb2.Round(experiment_id="long-model", model="y" * 100_000, events=rounds[0])])]
    results = {r.experiment_id[:20]: r for resp in client.stub().DecodeStream(iter(requests), timeout=5)
               for r in resp.results}
    assert "ended after 1 of 6 rounds" in results["unfinished"].error
    assert "experiment_id must be at most 256 characters, got 100,000" == results["x" * 20].error
    assert "unknown model 'yyyy" in results["long-model"].error and len(results["long-model"].error) < 400
    last = info.detectors_per_round[-1]
    if last % 8:
        tail = bytearray(rounds[-1])
        tail[-1] |= 0x80
        stream = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="pad", model=MODEL, events=r)])
                  for r in rounds[:-1]] + [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="pad", events=bytes(tail),
                                                                               last=True)])]
        (result,) = [r for resp in client.stub().DecodeStream(iter(stream), timeout=5) for r in resp.results]
        assert "padding bits" in result.error
    with pytest.raises(grpc.RpcError) as info_:
        client.decode("z" * 100_000, events[:1])
    assert info_.value.code() == grpc.StatusCode.NOT_FOUND and "100,000 characters" in info_.value.details()
    client.close()


def test_reflection_v1_and_v1alpha(running):
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(_target(running)) as channel:
        for version in ("v1", "v1alpha"):
            method = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                           request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                           response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            response = next(iter(method(iter([request]), timeout=5)))
            assert "nqec.v1.Decoder" in {s.name for s in response.list_services_response.service}
