"""Service hardening against a real loopback server (issue #25, #26): one server per port, work of
callers that left stops, idle and greedy streams are bounded, streams keep going past a bad
experiment, and the batcher's own contract (admission, close, max_batch) holds under threads."""

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decoder import CodeSpec, MatchingDecoder, NqecError
from decoder.events import pack_bits
from decoder.interface import Decoder, Stage
from nqec.cli import main
from server.app import ServerConfig, start_server
from server.batching import BatcherClosed, DeadlineExpired, MicroBatcher
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.models import ServedModel, family_model_name, load_models, matching_model_name

SPEC = CodeSpec(3, 3, 0.01)
MODEL = matching_model_name(SPEC)
FAMILY = family_model_name(SPEC)


class CountingDecoder(Decoder):
    """Matching in small chunks that sleeps per chunk and counts the chunks it decoded."""

    name = "counting"

    def __init__(self, seconds: float = 0.0, chunk_shots: int = 1 << 16):
        self.inner = MatchingDecoder.from_spec(SPEC)
        self.num_detectors, self.num_observables = self.inner.num_detectors, self.inner.num_observables
        self.seconds, self.chunk_shots = seconds, chunk_shots
        self.chunks, self.batch_sizes = 0, []

    def decode_chunk(self, events):
        time.sleep(self.seconds)
        self.chunks += 1
        self.batch_sizes.append(len(events))
        return self.inner.decode_chunk(events)


@pytest.fixture(scope="module")
def models():
    served = load_models(shipped=False, matching_specs=(SPEC,), any_length_specs=(SPEC,))
    served["crawl"] = ServedModel("crawl", "matching", "matching", SPEC, CountingDecoder(0.05, chunk_shots=100),
                                  served[MODEL].detectors_per_round, {})
    return served


@pytest.fixture(scope="module")
def events():
    return SPEC.circuit().compile_detector_sampler(seed=3).sample(3000, bit_packed=True)


@pytest.fixture
def server(models):
    running = start_server(ServerConfig(port=0, stream_idle_s=0.5, max_streams_per_client=2,
                                        max_stream_bytes=4096), models)
    assert running.wait_ready(60)
    yield running
    running.stop(grace=0)


def _stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, pb2_grpc.DecoderStub(channel)


def test_a_second_server_on_the_same_port_is_refused(server, models, capsys):
    with pytest.raises(NqecError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        start_server(ServerConfig(port=server.port, token="secret"), models)
    assert main(["serve", "--port", str(server.port)]) == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in capsys.readouterr().err


def test_nonsense_ports_and_missing_model_folders_are_one_line_errors(capsys):
    for argv, expected in ((["serve", "--port", "70000"], "--port must be in 0..65535"),
                           (["serve", "--port", "0", "--models", "/nonexistent"], "is not a directory")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err


@pytest.mark.parametrize("leave", ["cancel", "close the channel"])
def test_work_of_a_caller_that_left_stops_at_the_next_chunk(server, events, leave):
    decoder = server.service.batchers["crawl"].decoder
    channel, stub = _stub(server)
    before = decoder.chunks
    call = stub.Decode.future(pb2.DecodeRequest(model="crawl", detection_events=events.tobytes(),
                                                num_shots=len(events)))  # 30 chunks, 1.5 s of work
    time.sleep(0.3)
    call.cancel() if leave == "cancel" else channel.close()
    time.sleep(0.4)
    stopped_at = decoder.chunks
    time.sleep(0.4)
    assert decoder.chunks == stopped_at and stopped_at - before < 15, (before, stopped_at)
    assert server.service.inflight_shots.value == 0  # its shots were released when the work stopped
    channel.close()


def test_idle_streams_are_ended_and_one_client_cannot_take_every_slot(server):
    release = threading.Event()

    def silent():
        release.wait(5)
        yield from ()

    channel, stub = _stub(server)
    other, other_stub = _stub(server)
    try:
        start = time.monotonic()
        calls = [stub.DecodeStream(silent()) for _ in range(3)]
        ended = {}
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                list(call)
            ended.setdefault(info.value.code(), []).append(info.value.details())
        assert time.monotonic() - start < 3  # the idle limit is 0.5 s; the silent client would wait 5 s
        refused, idle = ended[grpc.StatusCode.RESOURCE_EXHAUSTED], ended[grpc.StatusCode.DEADLINE_EXCEEDED]
        assert len(refused) == 1 and "--max-streams-per-client" in refused[0]  # one client, two slots
        assert len(idle) == 2 and all("--stream-idle-s" in details for details in idle)
        time.sleep(0.2)
        assert server.service.open_streams.value == 0
        # a fresh client is served as soon as the idle ones are gone
        first = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="a", model=MODEL, events=b"\0")])]
        responses = list(other_stub.DecodeStream(iter(first), timeout=5))
        assert "ended after 1 of" in responses[-1].results[0].error
    finally:
        release.set()
        channel.close()
        other.close()


def _rounds(bits, per_round):
    bounds = np.cumsum([0, *per_round])
    return [pack_bits(bits[:, lo:hi]).tobytes() for lo, hi in zip(bounds[:-1], bounds[1:])]


def _results(stub, requests):
    out = {}
    for response in stub.DecodeStream(iter(requests), timeout=10):
        for result in [*response.results, *response.blocks]:
            out.setdefault(result.experiment_id if hasattr(result, "experiment_id") else result.block_id,
                           []).append(result)
    return out


def test_later_rounds_of_a_failed_experiment_name_the_first_error(server, events):
    channel, stub = _stub(server)
    per_round = server.service.models[MODEL].detectors_per_round
    bits = np.unpackbits(events[:1], axis=1, count=sum(per_round), bitorder="little").astype(bool)
    rounds = _rounds(bits, per_round)
    requests = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="bad", model=MODEL, events=b"\xff" * 9)]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="bad", events=rounds[1])]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="ghost", events=rounds[0])]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="dup", model=MODEL, events=rounds[0])]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="dup", model=FAMILY, events=rounds[1])])]
    results = _results(stub, requests)
    first, later = results["bad"]
    assert "expected 1 x" in first.error
    assert "ended by an earlier error" in later.error and "expected 1 x" in later.error
    assert "no open experiment has this id" in results["ghost"][0].error
    assert "already open with model" in results["dup"][0].error and "duplicate" in results["dup"][0].error
    channel.close()


def test_a_stream_cannot_hold_more_than_its_memory_budget(server, events):
    channel, stub = _stub(server)
    per_round = server.service.models[MODEL].detectors_per_round
    block = lambda key, n: pb2.RoundBlock(block_id=key, model=MODEL, num_experiments=n,  # noqa: E731
                                          events=bytes(n * ((per_round[0] + 7) // 8)))
    results = _results(stub, [pb2.StreamRequest(blocks=[block("small", 100), block("huge", 5000)])])
    assert "ended after 1 of" in results["small"][0].error  # accepted, then cut short by the stream's end
    assert "bytes of stream memory" in results["huge"][0].error and "4,096" in results["huge"][0].error
    channel.close()


def test_a_refused_final_decode_can_be_retried_and_a_failing_experiment_does_not_end_the_stream(
        server, events, monkeypatch):
    channel, stub = _stub(server)
    per_round = server.service.models[MODEL].detectors_per_round
    bits = np.unpackbits(events[:64], axis=1, count=sum(per_round), bitorder="little").astype(bool)
    rounds = _rounds(bits, per_round)
    batcher = server.service.batchers[MODEL]
    real_decode, refusals = batcher.decode, []

    def refuse_once(*args, **kwargs):
        if not refusals:
            refusals.append(1)
            raise DeadlineExpired()
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(batcher, "decode", refuse_once)
    from server import streams

    real_add = streams.AnyLengthExperiments.add
    monkeypatch.setattr(streams.AnyLengthExperiments, "add", lambda self, packed, last: (_ for _ in ()).throw(
        RuntimeError("planted window failure")) if self.experiments == 3 else real_add(self, packed, last))
    requests = [pb2.StreamRequest(blocks=[pb2.RoundBlock(block_id="b", model=MODEL, num_experiments=64, events=r,
                                                         last=i == len(rounds) - 1) for i, r in enumerate(rounds)][i:i + 1])
                for i in range(len(rounds))]
    requests.append(pb2.StreamRequest(blocks=[pb2.RoundBlock(block_id="b", events=rounds[-1], last=True),
                                              pb2.RoundBlock(block_id="w", model=FAMILY, num_experiments=3,
                                                             events=bytes(3))]))
    results = _results(stub, requests)
    refused, answered = results["b"]
    assert "deadline" in refused.error and "send its last round again" in refused.error
    assert not answered.error
    expected = MatchingDecoder.from_spec(SPEC).decode_batch(pack_bits(bits))
    flips = np.frombuffer(answered.observable_flips, np.uint8) & 1  # one byte per experiment's observables
    assert np.array_equal(flips.astype(bool), expected[:, 0]) and expected.any()
    assert list(answered.stages) == [Stage.MATCHING] * 64
    assert "planted window failure" in results["w"][0].error
    channel.close()


def test_any_length_blocks_report_a_stage_per_experiment(server):
    channel, stub = _stub(server)
    windowed = server.service.models[FAMILY].windowed
    sizes = windowed.slice_sizes(4)
    spec = CodeSpec(3, 4, SPEC.p)
    bits = spec.circuit().compile_detector_sampler(seed=9).sample(5)
    rounds = _rounds(bits, sizes)
    requests = [pb2.StreamRequest(blocks=[pb2.RoundBlock(block_id="w", model=FAMILY, num_experiments=5, events=r,
                                                         last=i == len(rounds) - 1)]) for i, r in enumerate(rounds)]
    (final,) = _results(stub, requests)["w"]
    assert not final.error and list(final.stages) == [Stage.MATCHING] * 5
    channel.close()


def test_malformed_messages_and_lowercase_bearer(models):
    running = start_server(ServerConfig(port=0, token="secret"), models)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            raw = channel.unary_unary("/nqec.v1.Decoder/Decode")
            with pytest.raises(grpc.RpcError) as info:
                raw(b"\xff\xff\xff", metadata=(("authorization", "Bearer secret"),), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Decode" in info.value.details()
            stub = pb2_grpc.DecoderStub(channel)
            for scheme in ("bearer", "BEARER"):
                assert stub.ListModels(pb2.ListModelsRequest(), metadata=(("authorization", f"{scheme} secret"),),
                                       timeout=5).models
            with pytest.raises(grpc.RpcError) as info:
                stub.ListModels(pb2.ListModelsRequest(), metadata=(("authorization", "Bearer wrong"),), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop(grace=0)


def _health(server, name: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status


def test_an_any_length_model_says_not_serving_until_ready_and_is_fast_once_serving():
    """A first stream used to stall for seconds (~8 s at d=9) while health said SERVING."""
    spec = CodeSpec(7, 7, 0.003)
    name = family_model_name(spec)
    running = start_server(ServerConfig(port=0),
                           load_models(shipped=False, matching_specs=(spec,), any_length_specs=(spec,)))
    channel, stub = _stub(running)
    try:
        assert _health(running, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(running, "") == health_pb2.HealthCheckResponse.SERVING  # the rest of the server serves
        first = pb2.StreamRequest(rounds=[pb2.Round(experiment_id="early", model=name, events=b"")])
        start = time.monotonic()
        (refused,) = [r for response in stub.DecodeStream(iter([first]), timeout=5) for r in response.results]
        assert "not ready yet" in refused.error and "NOT_SERVING" in refused.error
        assert time.monotonic() - start < 0.5  # refused at once, not after building the graphs
        deadline = time.monotonic() + 60
        while _health(running, name) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        windowed = running.service.models[name].windowed
        length = 2 * windowed.span  # first, bulk and a final window: no short-experiment window
        bits = CodeSpec(7, length, spec.p).circuit().compile_detector_sampler(seed=1).sample(1)
        rounds = _rounds(bits, windowed.slice_sizes(length))

        def round_trip(key: str) -> float:
            requests = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id=key, model=name, events=r,
                                                            last=i == len(rounds) - 1)]) for i, r in enumerate(rounds)]
            start = time.perf_counter()
            (answer,) = [r for response in stub.DecodeStream(iter(requests), timeout=10) for r in response.results]
            assert not answer.error
            return time.perf_counter() - start

        first_trip = round_trip("first")
        steady = min(round_trip(f"then{i}") for i in range(5))
        assert first_trip <= 2 * steady + 0.005, (first_trip, steady)
    finally:
        channel.close()
        running.stop(grace=0)


# -- the batcher's contract, under threads -----------------------------------------------------
def test_admission_is_released_only_when_the_work_ends(events):
    decoder = CountingDecoder(0.05, chunk_shots=100)
    batcher = MicroBatcher(decoder)
    released = []
    holder = threading.Thread(target=lambda: batcher.decode(events[:300], release=lambda: released.append("a")))
    holder.start()
    time.sleep(0.02)
    with pytest.raises(DeadlineExpired):  # queued behind the holder, times out; its batch may still run
        batcher.decode(events[:300], time.monotonic() + 0.05, release=lambda: released.append("b"))
    assert "b" not in released or decoder.chunks >= 3  # released only once the holder's work is done
    holder.join()
    deadline = time.monotonic() + 2
    while len(released) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(released) == ["a", "b"]  # each exactly once
    batcher.close()


def test_requests_that_expire_while_the_model_is_busy_are_not_decoded(events):
    decoder = CountingDecoder()
    batcher = MicroBatcher(decoder)
    patient = threading.Thread(target=batcher.decode, args=(events[:7],))
    with batcher._busy:  # an inline decode holds the model; both requests queue
        patient.start()
        with pytest.raises(DeadlineExpired):
            batcher.decode(events[:5], time.monotonic() + 0.1)
        time.sleep(0.1)
    patient.join(timeout=5)
    assert decoder.batch_sizes == [7]  # the expired request's 5 shots were not decoded with it
    batcher.close()


def test_batches_never_exceed_max_batch(events):
    decoder = CountingDecoder(0.02)
    batcher = MicroBatcher(decoder, max_batch=1000)
    threads = [threading.Thread(target=batcher.decode, args=(events[:700],)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(decoder.batch_sizes) <= 1000 and sum(decoder.batch_sizes) == 6 * 700
    batcher.close()


def test_close_answers_every_caller_and_stops_the_worker(events):
    decoder = CountingDecoder(0.2)
    batcher = MicroBatcher(decoder)
    outcomes = []

    def call():
        try:
            batcher.decode(events[:10])
            outcomes.append("ok")
        except BatcherClosed:
            outcomes.append("closed")

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    batcher.close()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads) and len(outcomes) == 20 and "closed" in outcomes
    time.sleep(0.5)
    assert not batcher.alive
    with pytest.raises(BatcherClosed):
        batcher.decode(events[:1])


def test_no_any_length_serves_the_fixed_length_models_only():
    from server.models import load_models as load

    full = load(shipped=False, matching_specs=(SPEC,), any_length_specs=(SPEC,))
    quick = load(shipped=False, matching_specs=(SPEC,), any_length_specs=(SPEC,), any_length=False)
    assert any(model.windowed is not None for model in full.values())
    assert set(quick) == {name for name, model in full.items() if model.windowed is None}
    running = start_server(ServerConfig(port=0), quick)
    try:
        assert running.wait_ready(1) and not running.warmer._thread.is_alive()  # nothing to build
    finally:
        running.stop(grace=0)
