"""A real gRPC server on loopback: answers, status codes, concurrency, streaming, health, reflection."""

import threading
import time

import grpc
import numpy as np
import pytest
import stim
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from decoder import CodeSpec, MatchingDecoder
from decoder.bundle import Bundle
from decoder.events import pack_bits
from decoder.interface import Decoder, Stage
from server.app import ServerConfig, start_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from server.models import ServedModel, load_models, matching_model_name

SPEC = CodeSpec(5, 5, 0.003)
MODEL = matching_model_name(SPEC)


class SlowDecoder(Decoder):
    """Matching that sleeps first: lets tests hold a call in flight."""

    name = "slow"

    def __init__(self, seconds: float):
        self.inner = MatchingDecoder.from_spec(SPEC)
        self.num_detectors, self.num_observables = self.inner.num_detectors, self.inner.num_observables
        self.seconds = seconds

    def decode_chunk(self, events):
        time.sleep(self.seconds)
        return self.inner.decode_batch_with_info(events)


@pytest.fixture(scope="module")
def models(transformer_bundle):
    served = load_models(models_dir=transformer_bundle.path.parent, shipped=False, matching_specs=(SPEC,), any_length_specs=(SPEC,))
    slow = SlowDecoder(0.3)
    served["slow"] = ServedModel("slow", "matching", "matching", SPEC, slow, served[MODEL].detectors_per_round, {})
    repetition = stim.Circuit.generated("repetition_code:memory", distance=4, rounds=6, before_round_data_depolarization=0.01)
    served["rep"] = ServedModel("rep", "matching", "matching", SPEC, MatchingDecoder(repetition.detector_error_model()), [], {})
    fpga = Bundle.load("predecoder-fpga")
    served["predecoder-fpga-guided"] = ServedModel("predecoder-fpga-guided", "predecoder", "guided-matching", fpga.spec,
                                                   fpga.decoder(pipeline="guided-matching"), [], {})
    return served


@pytest.fixture(scope="module")
def server(models):
    running = start_server(ServerConfig(port=0, metrics_port=0), models)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def client(server):
    client = DecoderClient([f"127.0.0.1:{server.port}"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def shots():
    events, obs = SPEC.circuit().compile_detector_sampler(seed=21).sample(3000, separate_observables=True, bit_packed=True)
    return events, obs


def call_code(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_decode_equals_in_process_matching(client, shots):
    events, _ = shots
    flips, stages, seconds = client.decode(MODEL, events)
    assert np.array_equal(flips, MatchingDecoder.from_spec(SPEC).decode_batch(events))
    assert (stages == Stage.MATCHING).all() and seconds > 0


def test_correlated_twin_is_served_and_equals_in_process(client, shots):
    events, _ = shots
    twin = matching_model_name(SPEC, correlated=True)
    assert twin == "matching-correlated-d5-r5-p0.003-z-depolarizing"
    info = client.model_info(twin)
    assert (info.kind, info.decoder) == ("matching", "matching-correlated")
    flips, _, _ = client.decode(twin, events)
    assert np.array_equal(flips, MatchingDecoder.from_spec(SPEC, correlations=True).decode_batch(events))
    assert not np.array_equal(flips, client.decode(MODEL, events)[0])  # a different decoder answered


def test_transformer_bundle_served_with_stage_per_shot(client, transformer_bundle):
    spec = transformer_bundle.spec
    events, _ = spec.circuit().compile_detector_sampler(seed=3).sample(500, separate_observables=True, bit_packed=True)
    flips, stages, _ = client.decode(transformer_bundle.name, events)
    local = transformer_bundle.decoder().decode_batch_with_info(events)
    assert np.array_equal(flips, local.observables)
    assert np.array_equal(stages, local.stage)


def test_guided_model_served_equals_in_process_guided_matching(client):
    """The headline pipeline (the C++ weighted matcher behind a network) over gRPC, beside plain
    matching on the same shots: the served answers are the in-process guided ones, not matching's."""
    bundle = Bundle.load("predecoder-fpga")
    events = bundle.spec.circuit().compile_detector_sampler(seed=8).sample(3000, bit_packed=True)
    flips, stages, _ = client.decode("predecoder-fpga-guided", events)
    local = bundle.decoder(pipeline="guided-matching").decode_batch_with_info(events)
    assert np.array_equal(flips, local.observables) and np.array_equal(stages, local.stage)
    assert (stages == Stage.NETWORK).all()
    plain = MatchingDecoder.from_spec(bundle.spec).decode_batch(events)
    assert not np.array_equal(flips, plain)  # a pipeline that ignored the network would answer as matching


@pytest.mark.parametrize("request_, code, message", [
    (pb2.DecodeRequest(model="nope", detection_events=b"\0" * 15, num_shots=1), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    (pb2.DecodeRequest(model=MODEL, detection_events=b"", num_shots=0), grpc.StatusCode.INVALID_ARGUMENT, "empty request"),
    (pb2.DecodeRequest(model=MODEL, detection_events=b"\0" * 14, num_shots=1), grpc.StatusCode.INVALID_ARGUMENT,
     "expects 1 x 15 bytes"),
    (pb2.DecodeRequest(model=MODEL, detection_events=b"\0" * 15 * 70000, num_shots=70000), grpc.StatusCode.INVALID_ARGUMENT,
     "the limit is 65536"),
])
def test_bad_requests_get_status_codes_and_server_survives(client, shots, request_, code, message):
    got_code, details = call_code(lambda: client.stub().Decode(request_))
    assert got_code == code and message in details
    flips, _, _ = client.decode(MODEL, shots[0][:10])  # still serving
    assert flips.shape == (10, 1)


def test_nonzero_padding_bits_are_rejected(client):
    """The 'rep' model has 21 detectors: 3 bytes per shot, the top 3 bits of the last byte are padding."""
    ok = client.stub().Decode(pb2.DecodeRequest(model="rep", detection_events=b"\x03\x00\x00", num_shots=1))
    assert ok.num_shots == 1
    code, details = call_code(lambda: client.stub().Decode(
        pb2.DecodeRequest(model="rep", detection_events=b"\x03\x00\x20", num_shots=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "padding bits past detector 21" in details


def test_message_size_limit_gives_resource_exhausted(models):
    running = start_server(ServerConfig(port=0, max_message_bytes=1024), models)
    try:
        small = DecoderClient([f"127.0.0.1:{running.port}"])
        code, _ = call_code(lambda: small.stub().Decode(
            pb2.DecodeRequest(model=MODEL, detection_events=b"\0" * 15 * 100, num_shots=100)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        small.close()
    finally:
        running.stop(grace=0)


def test_deadline_exceeded_never_a_late_answer(client, shots):
    events = shots[0][:1]
    code, _ = call_code(lambda: client.stub().Decode(
        pb2.DecodeRequest(model="slow", detection_events=events.tobytes(), num_shots=1), timeout=0.05))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_sixteen_concurrent_clients_get_their_own_answers(server, shots):
    events, _ = shots
    expected = MatchingDecoder.from_spec(SPEC).decode_batch(events)
    failures = []

    def worker(index):
        client = DecoderClient([f"127.0.0.1:{server.port}"])
        for repeat in range(10):
            lo = (index * 37 + repeat * 101) % (len(events) - 64)
            flips, _, _ = client.decode(MODEL, events[lo: lo + 1 + index])
            if not np.array_equal(flips, expected[lo: lo + 1 + index]):
                failures.append((index, repeat))
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def rounds_of(bits, per_round):
    bounds = np.cumsum([0] + list(per_round))
    return [pack_bits(bits[None, lo:hi])[0].tobytes() for lo, hi in zip(bounds[:-1], bounds[1:])]


def test_stream_with_interleaved_experiments(client, shots):
    events, _ = shots
    info = client.model_info(MODEL)
    assert sum(info.detectors_per_round) == info.num_detectors == 120
    bits = np.unpackbits(events[:6], axis=1, count=120, bitorder="little").astype(bool)
    per_experiment = [rounds_of(b, info.detectors_per_round) for b in bits]
    requests = []
    for r in range(len(info.detectors_per_round)):  # round r of all six experiments, in shuffled order
        order = np.random.default_rng(r).permutation(6)
        requests.append(pb2.StreamRequest(rounds=[
            pb2.Round(experiment_id=f"e{i}", model=MODEL if r == 0 else "", events=per_experiment[i][r],
                      last=r == len(info.detectors_per_round) - 1) for i in order]))
    results = {res.experiment_id: res for response in client.stub().DecodeStream(iter(requests)) for res in response.results}
    expected = MatchingDecoder.from_spec(SPEC).decode_batch(events[:6])
    assert set(results) == {f"e{i}" for i in range(6)}
    for i in range(6):
        assert not results[f"e{i}"].error
        assert bool(results[f"e{i}"].observable_flips[0] & 1) == expected[i, 0]


def test_stream_reports_bad_experiments_and_keeps_going(client, shots):
    info = client.model_info(MODEL)
    bits = np.unpackbits(shots[0][:1], axis=1, count=120, bitorder="little").astype(bool)[0]
    good = rounds_of(bits, info.detectors_per_round)
    requests = [pb2.StreamRequest(rounds=[
        pb2.Round(experiment_id="bad-model", model="nope", events=good[0]),
        pb2.Round(experiment_id="bad-length", model=MODEL, events=good[0] + b"\0"),
        pb2.Round(experiment_id="early-end", model=MODEL, events=good[0], last=True),
        *[pb2.Round(experiment_id="good", model=MODEL, events=chunk, last=k == len(good) - 1) for k, chunk in enumerate(good)],
    ])]
    results = {res.experiment_id: res for response in client.stub().DecodeStream(iter(requests)) for res in response.results}
    assert "unknown model 'nope'" in results["bad-model"].error
    assert "expected 1 x 2 bytes" in results["bad-length"].error
    assert "ended after 1 rounds" in results["early-end"].error
    assert results["good"].error == ""


def block_rounds(bits, per_round):
    """Round r of every experiment (rows of ``bits``), bit-packed row by row: one RoundBlock's events each."""
    bounds = np.cumsum([0] + list(per_round))
    return [pack_bits(bits[:, lo:hi]).tobytes() for lo, hi in zip(bounds[:-1], bounds[1:])]


def test_stream_blocks_interleaved_with_single_experiments(client, shots):
    """Two blocks (25 and 15 experiments) and one single experiment advance in the same messages."""
    events, _ = shots
    per_round = client.model_info(MODEL).detectors_per_round
    bits = np.unpackbits(events[:41], axis=1, count=120, bitorder="little").astype(bool)
    first, second, single = block_rounds(bits[:25], per_round), block_rounds(bits[25:40], per_round), rounds_of(bits[40], per_round)
    last = len(per_round) - 1
    requests = [pb2.StreamRequest(
        blocks=[pb2.RoundBlock(block_id="b1", model=MODEL, num_experiments=15, events=second[r], last=r == last),
                pb2.RoundBlock(block_id="b0", model=MODEL, num_experiments=25, events=first[r], last=r == last)],
        rounds=[pb2.Round(experiment_id="e", model=MODEL, events=single[r], last=r == last)]) for r in range(last + 1)]
    responses = list(client.stub().DecodeStream(iter(requests)))
    blocks = {block.block_id: block for response in responses for block in response.blocks}
    (result,) = [res for response in responses for res in response.results]
    expected = MatchingDecoder.from_spec(SPEC).decode_batch(events[:41])[:, 0]
    for key, rows in (("b0", slice(0, 25)), ("b1", slice(25, 40))):
        assert blocks[key].error == ""
        flips = np.frombuffer(blocks[key].observable_flips, np.uint8)  # one byte per experiment: 1 observable
        assert np.array_equal(flips.astype(bool), expected[rows])
        assert list(blocks[key].stages) == [Stage.MATCHING] * (rows.stop - rows.start)
    assert result.experiment_id == "e" and bool(result.observable_flips[0] & 1) == expected[40]


def test_stream_blocks_report_errors_and_keep_going(client, shots):
    per_round = client.model_info(MODEL).detectors_per_round
    bits = np.unpackbits(shots[0][:3], axis=1, count=120, bitorder="little").astype(bool)
    good = block_rounds(bits, per_round)
    requests = [pb2.StreamRequest(blocks=[
        pb2.RoundBlock(block_id="empty", model=MODEL, num_experiments=0, events=b""),
        pb2.RoundBlock(block_id="short", model=MODEL, num_experiments=3, events=good[0][:-1]),
        pb2.RoundBlock(block_id="bad-model", model="nope", num_experiments=3, events=good[0]),
        pb2.RoundBlock(block_id="early-end", model=MODEL, num_experiments=3, events=good[0], last=True),
        *[pb2.RoundBlock(block_id="good", model=MODEL, num_experiments=3, events=chunk, last=k == len(good) - 1)
          for k, chunk in enumerate(good)],
    ])]
    blocks = {b.block_id: b for response in client.stub().DecodeStream(iter(requests)) for b in response.blocks}
    assert "must hold 1 to" in blocks["empty"].error and "got 0" in blocks["empty"].error
    assert "expected 3 x 2 bytes, got 5" in blocks["short"].error
    assert "unknown model 'nope'" in blocks["bad-model"].error
    assert "ended after 1 rounds" in blocks["early-end"].error
    assert blocks["good"].error == "" and len(blocks["good"].stages) == 3


def test_list_models_and_info(client, transformer_bundle):
    names = {m.name for m in client.list_models()}
    assert {MODEL, transformer_bundle.name} <= names
    info = client.model_info(transformer_bundle.name)
    assert (info.kind, info.decoder, info.distance, info.num_detectors) == ("transformer", "transformer", 3, 24)
    code, _ = call_code(lambda: client.stub().GetModelInfo(pb2.GetModelInfoRequest(model="nope")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_respond(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nqec.v1.Decoder"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for s in next(responses).list_services_response.service}
        assert "nqec.v1.Decoder" in services and "grpc.health.v1.Health" in services


def test_token_is_required_when_configured(models, shots):
    running = start_server(ServerConfig(port=0, token="s3cret"), models)
    try:
        anonymous = DecoderClient([f"127.0.0.1:{running.port}"])
        code, details = call_code(lambda: anonymous.decode(MODEL, shots[0][:2]))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details
        wrong = DecoderClient([f"127.0.0.1:{running.port}"], token="guess")
        assert call_code(lambda: wrong.list_models())[0] == grpc.StatusCode.UNAUTHENTICATED
        authorized = DecoderClient([f"127.0.0.1:{running.port}"], token="s3cret")
        assert authorized.decode(MODEL, shots[0][:2])[0].shape == (2, 1)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:  # health stays open
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == 1
        for c in (anonymous, wrong, authorized):
            c.close()
    finally:
        running.stop(grace=0)


def test_graceful_shutdown_finishes_in_flight_calls(models, shots):
    running = start_server(ServerConfig(port=0), models)
    client = DecoderClient([f"127.0.0.1:{running.port}"])
    client.model_info("slow")  # connect first, so the decode below is really in flight
    outcome = {}

    def call():
        outcome["flips"] = client.decode("slow", shots[0][:4], timeout=10)[0]

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)  # the call is now in flight (the slow model sleeps 0.3 s)
    running.stop(grace=5)
    thread.join()
    assert outcome["flips"].shape == (4, 1)
    client.close()


def test_metrics_count_shots_and_errors(server, client, shots):
    import urllib.request

    client.decode(MODEL, shots[0][:7])
    call_code(lambda: client.stub().Decode(pb2.DecodeRequest(model="nope", num_shots=1)))
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_http.server_port}/metrics").read().decode()
    assert f'nqec_shots_total{{model="{MODEL}"}}' in text
    assert 'nqec_errors_total{code="NOT_FOUND",method="Decode"}' in text
    assert "nqec_request_seconds_bucket" in text


def test_round_robin_over_replicas(models, shots):
    replicas = [start_server(ServerConfig(port=0, metrics_port=0), models) for _ in range(2)]
    try:
        client = DecoderClient([f"127.0.0.1:{r.port}" for r in replicas])
        client.model_info(MODEL)  # cached after one call; the decodes below alternate replicas
        for _ in range(4):
            client.decode(MODEL, shots[0][:3])
        for replica in replicas:
            served = replica.metrics.shots.labels(MODEL)._value.get()
            assert served == 6
        client.close()
    finally:
        for replica in replicas:
            replica.stop(grace=0)


def test_server_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from server.app import ServerConfig, start_server; r = start_server(ServerConfig(port=0)); "
            "r.stop(0); assert 'torch' not in sys.modules and 'training' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_tls_serves_only_trusting_clients(models, shots, tmp_path):
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    running = start_server(ServerConfig(port=0, tls_cert=str(cert), tls_key=str(key)), models)
    try:
        secure = DecoderClient([f"localhost:{running.port}"], root_certificates=cert.read_bytes())
        flips, _, _ = secure.decode(MODEL, shots[0][:5], timeout=10)
        assert flips.shape == (5, 1)
        plaintext = DecoderClient([f"127.0.0.1:{running.port}"])
        assert call_code(lambda: plaintext.stub().ListModels(pb2.ListModelsRequest(), timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
        secure.close()
        plaintext.close()
    finally:
        running.stop(grace=0)


def test_bench_server_reports_latency_throughput_and_overhead(server, tmp_path):
    """`nqec bench server --target` against the loopback server: every phase runs and lands in the JSON."""
    import json

    from nqec.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "server", "--model", "matching", "-d", "5", "-r", "5", "-p", "0.003", "--target",
                 f"127.0.0.1:{server.port}", "--seconds", "0.2", "--clients", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == MODEL and result["server"] == f"127.0.0.1:{server.port}"
    assert 0 < result["unary_p50_ms"] <= result["unary_p99_ms"] <= result["unary_p999_ms"]
    assert result["sustained_shots_per_s"] > 0 and result["stream_shots_per_s"] > 0
    for batch in (1024, 4096):  # gRPC adds time; it cannot make decoding faster
        times = result[f"batch{batch}_ms"]
        assert result[f"grpc_overhead_batch{batch}"] == pytest.approx(times["grpc"] / times["inprocess"])
        assert result[f"grpc_overhead_batch{batch}"] > 1
