"""DecodeStream of experiments of any length against a real loopback server: windowed answers
equal in-process windowed decoding bit for bit; corrections stream; bad rounds stay local."""

import io

import grpc
import numpy as np
import pytest

from decoder import CodeSpec
from decoder.events import pack_bits
from decoder.windowed import SlidingWindowDecoder
from server.app import ServerConfig, start_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from server.models import family_model_name, load_models

FAMILY = CodeSpec(5, 5, 0.004)


@pytest.fixture(scope="module")
def client():
    server = start_server(ServerConfig(port=0), load_models(shipped=False, matching_specs=(FAMILY,), any_length_specs=(FAMILY,)))
    assert server.wait_ready(120)
    client = DecoderClient([f"127.0.0.1:{server.port}"])
    yield client
    client.close()
    server.stop(grace=0)


def _experiments(rounds: int, shots: int, seed: int):
    spec = CodeSpec(5, rounds, 0.004)
    events = spec.circuit().compile_detector_sampler(seed=seed).sample(shots)
    sizes = SlidingWindowDecoder(FAMILY).slice_sizes(rounds)
    bounds = np.cumsum([0, *sizes])
    return events, [events[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def test_model_info_describes_any_length_models(client):
    info = client.model_info(family_model_name(FAMILY))
    assert info.any_length and info.rounds == 0 and list(info.detectors_per_round) == [12, 24, 12]
    assert (info.window_commit, info.window_buffer) == (5, 5)
    assert [len(s.types) for s in info.slices] == [12, 24, 12]
    assert set(info.slices[1].types) == {"X", "Z"} and set(info.slices[0].types) == {"Z"}
    with pytest.raises(grpc.RpcError) as error:
        client.decode(family_model_name(FAMILY), np.zeros((1, 15), np.uint8))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "use DecodeStream" in error.value.details()


@pytest.mark.parametrize("correlated", [False, True])
def test_windowed_stream_equals_in_process_bit_for_bit(client, correlated):
    """A block of 40 experiments of 60 rounds, interleaved with single 3- and 23-round experiments."""
    model = family_model_name(FAMILY, correlated)
    decoder = SlidingWindowDecoder(FAMILY, correlations=correlated)
    long_events, long_slices = _experiments(60, 40, seed=1)
    short_events, short_slices = _experiments(3, 2, seed=2)
    mid_events, mid_slices = _experiments(23, 1, seed=3)
    requests = []
    for index in range(len(long_slices)):
        request = pb2.StreamRequest(blocks=[pb2.RoundBlock(
            block_id="block", model=model if index == 0 else "", num_experiments=40,
            events=pack_bits(long_slices[index]).tobytes(), last=index == len(long_slices) - 1,
            stream_corrections=index == 0)])
        for name, slices in (("short0", [s[:1] for s in short_slices]), ("short1", [s[1:] for s in short_slices]),
                             ("mid", mid_slices)):
            if index < len(slices):
                request.rounds.append(pb2.Round(experiment_id=name, model=model if index == 0 else "",
                                                events=pack_bits(slices[index])[0].tobytes(),
                                                last=index == len(slices) - 1))
        requests.append(request)
    responses = list(client.stub().DecodeStream(iter(requests), timeout=60))
    finals = {r.experiment_id: r for resp in responses for r in resp.results if not r.partial}
    blocks = [b for resp in responses for b in resp.blocks]
    assert not any(r.error for r in finals.values()) and not any(b.error for b in blocks)
    final_block = [b for b in blocks if not b.partial]
    assert len(final_block) == 1
    unpack = lambda data, n: np.unpackbits(np.frombuffer(data, np.uint8).reshape(n, -1), axis=1, count=1,
                                           bitorder="little").astype(bool)
    assert np.array_equal(unpack(final_block[0].observable_flips, 40), decoder.decode_batch(long_events, 60))
    assert np.array_equal(np.concatenate([unpack(finals[f"short{i}"].observable_flips, 1) for i in range(2)]),
                          decoder.decode_batch(short_events, 3))
    assert np.array_equal(unpack(finals["mid"].observable_flips, 1), decoder.decode_batch(mid_events, 23))
    # Streamed corrections: one per committed window, XOR-ing to the in-process frame before the last window.
    partials = [b for b in blocks if b.partial]
    stream = decoder.open(40)
    expected = [stream.push(s) for s in long_slices[:-1]]
    expected = [e for e in expected if e is not None]
    assert len(partials) == len(expected) == 11
    for got, want in zip(partials, expected):
        assert np.array_equal(unpack(got.observable_flips, 40), want)
    assert [p.rounds_committed for p in partials] == [5 * (i + 1) for i in range(11)]


def test_bad_rounds_get_per_experiment_errors_and_the_stream_goes_on(client):
    model = family_model_name(FAMILY)
    _, slices = _experiments(8, 1, seed=4)
    good = [pack_bits(s)[0].tobytes() for s in slices]
    requests = [pb2.StreamRequest(rounds=[
        pb2.Round(experiment_id="wrong-size", model=model, events=good[1]),  # a middle slice as the first
        pb2.Round(experiment_id="final-first", model=model, events=good[0], last=True),
        pb2.Round(experiment_id="good", model=model, events=good[0])])]
    requests += [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="good", events=e, last=i == len(good) - 1)])
                 for i, e in enumerate(good[1:], start=1)]
    results = {r.experiment_id: r for resp in client.stub().DecodeStream(iter(requests), timeout=30)
               for r in resp.results}
    assert "round 0 has 12 detectors per experiment: expected 1 x 2 bytes, got 3" in results["wrong-size"].error
    assert "needs at least one round" in results["final-first"].error
    assert not results["good"].error and not results["good"].partial
    late = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="once", model=model, events=good[0]),
                                      pb2.Round(experiment_id="once", events=good[-1], last=True),
                                      pb2.Round(experiment_id="once", events=good[1])])]  # after its final round
    (answer, error) = [r for resp in client.stub().DecodeStream(iter(late), timeout=30) for r in resp.results]
    assert not answer.error and "has already ended (its round with last=true came earlier)" in error.error
    reused = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="twice", model=model, events=good[0]),
                                        pb2.Round(experiment_id="twice", model=model, events=good[0])])]
    (error,) = [r for resp in client.stub().DecodeStream(iter(reused), timeout=30) for r in resp.results]
    assert "round 1 has 24 detectors" in error.error and "is this id still open from an earlier one?" in error.error


@pytest.mark.parametrize("correlated", [False, True])
def test_many_rounds_in_one_message_answer_as_one_round_per_message(client, correlated):
    """Experiments of 47 rounds sent 13 rounds per message, interleaved with a second experiment in the same
    messages: the answers are in-process windowed decoding's, and each message's one streamed correction is
    the XOR of the windows its rounds committed, with the slices committed so far. A bad round inside a
    message (the 20th, too short) ends its experiment naming that round; the other experiment goes on."""
    model = family_model_name(FAMILY, correlated)
    decoder = SlidingWindowDecoder(FAMILY, correlations=correlated)
    events, slices = _experiments(47, 3, seed=6)
    rows = {f"e{k}": [pack_bits(s[k: k + 1])[0].tobytes() for s in slices] for k in range(3)}
    rows["e2"][20] = rows["e2"][20][:-1]
    requests = [pb2.StreamRequest(rounds=[
        pb2.Round(experiment_id=name, model=model if i == 0 else "", events=data[i], last=i == len(data) - 1,
                  stream_corrections=i == 0)
        for name, data in rows.items() for i in range(start, min(start + 13, len(data)))])
        for start in range(0, len(slices), 13)]
    results = [r for resp in client.stub().DecodeStream(iter(requests), timeout=60) for r in resp.results]
    unpack = lambda data: np.unpackbits(np.frombuffer(data, np.uint8), count=1, bitorder="little").astype(bool)
    for k in range(2):
        mine = [r for r in results if r.experiment_id == f"e{k}"]
        assert not any(r.error for r in mine) and not mine[-1].partial
        assert np.array_equal(unpack(mine[-1].observable_flips), decoder.decode_batch(events[k: k + 1], 47)[0])
        partials = [r for r in mine if r.partial]
        assert [p.rounds_committed for p in partials] == [5, 20, 30]  # windows end at slices 9, 14, ..., 34
        flips = np.bitwise_xor.reduce([unpack(p.observable_flips) for p in partials])
        stream = decoder.open(1)  # the messages before the final one, slice by slice
        committed = [stream.push(s[k: k + 1]) for s in slices[:39]]
        assert np.array_equal(flips, np.bitwise_xor.reduce([c[0] for c in committed if c is not None]))
    failures = [r.error for r in results if r.experiment_id == "e2" and r.error]
    assert "round 20 has 24 detectors per experiment: expected 1 x 3 bytes, got 2" in failures[0]
    assert len(failures) == 3 and all("was ended by an earlier error" in f for f in failures[1:])  # its later messages


@pytest.mark.parametrize("decoder", [[], ["--decoder", "guided-matching", "--model", "predecoder-fpga"]])
def test_bench_stream_reports_speed_reaction_memory_and_accuracy(monkeypatch, tmp_path, decoder):
    import json

    import server.bench_stream as bench
    from nqec.cli import main

    monkeypatch.setattr(bench, "ROUNDS", (10, 100))
    monkeypatch.setattr(bench, "HEADLINE_BLOCK", 32)
    monkeypatch.setattr(bench, "HEADLINE_ROUNDS", 60)
    monkeypatch.setattr(bench, "WAIT_FOR_EVERY_MODEL", False)  # the d=3 family alone: a quicker start
    out = tmp_path / "stream.json"
    assert main(["bench", "stream", "-d", "3", "--ler-shots", "3000", "--round-budget", "20000", *decoder,
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rounds_per_s"] > 0 and result["single_rounds_per_s"] > 0 and result["reaction_p99_ms"] > 0
    assert result["decoder"] == ("windowed-guided-matching" if decoder else "windowed-matching")
    row = result["table"][0]
    assert 0 < row["server_reaction_p50_ms"] < row["reaction_p50_ms"]  # the server's part of the round trip
    assert [(row["distance"], row["rounds"]) for row in result["table"]] == [(3, 10), (3, 100)]
    check = next(value for value in result["window_ler_check"].values() if isinstance(value, dict))
    assert check["whole_errors"] > 20 and abs(check["windowed_errors"] - check["whole_errors"]) <= 0.15 * check["whole_errors"] + 5


def test_errors_for_many_experiments_come_in_responses_a_client_can_receive(client):
    """60,000 bad first rounds in one message (their errors: ~6 MB, over gRPC's default 4 MiB receive
    limit) and a 1 MiB experiment id, then a good experiment: every error arrives, split over
    responses of at most 1 MiB, the long id is refused without being echoed whole, and the good
    experiment is answered (before, the oversized response ended the stream)."""
    from server.service import MAX_ID_CHARS, MAX_RESPONSE_BYTES

    model = family_model_name(FAMILY)
    events, slices = _experiments(6, 1, seed=7)
    good = [pack_bits(s)[0].tobytes() for s in slices]
    requests = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id=f"bad{k}", model=model, events=b"\1")
                                          for k in range(60_000)]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="x" * (1 << 20), model=model, events=good[0])]),
                pb2.StreamRequest(rounds=[pb2.Round(experiment_id="good", model=model if i == 0 else "", events=e,
                                                    last=i == len(good) - 1) for i, e in enumerate(good)])]
    responses = list(client.stub().DecodeStream(iter(requests), timeout=120))
    assert len(responses) >= 6 and all(r.ByteSize() <= MAX_RESPONSE_BYTES for r in responses)
    results = [r for resp in responses for r in resp.results]
    assert sum(r.experiment_id.startswith("bad") and "expected 1 x 2 bytes, got 1" in r.error for r in results) == 60_000
    (long,) = [r for r in results if r.experiment_id.startswith("x")]
    assert len(long.experiment_id) == MAX_ID_CHARS and "at most 256 characters, got 1,048,576" in long.error
    (answer,) = [r for r in results if r.experiment_id == "good"]
    assert not answer.error
    decoded = np.unpackbits(np.frombuffer(answer.observable_flips, np.uint8), count=1, bitorder="little")
    assert np.array_equal(decoded.astype(bool), SlidingWindowDecoder(FAMILY).decode_batch(events, 6)[0])


def test_the_stream_bench_table_fits_a_terminal():
    """Rates from 10 to 2·10^6 rounds/s, 10,000-round rows and slow reactions: every figure whole in
    80 columns (no cell cut short with an ellipsis)."""
    from rich.console import Console

    from server.bench_stream import stream_table

    row = {"distance": 9, "rounds": 10_000, "block": 1_024, "rounds_per_s": 1_954_321.0, "single_rounds_per_s": 12.5,
           "grpc_rounds_per_s": 86_843.0, "reaction_p50_ms": 9.996, "reaction_p99_ms": 12_345.0,
           "server_reaction_p50_ms": 0.23, "server_reaction_p99_ms": 10.31, "held_memory_bytes": 123_456,
           "peak_memory_bytes": 200_000}
    check = {"shots": 20_000, "correlated": {"ratio": 1.013, "windowed_errors": 827, "whole_errors": 817}}
    result = {"decoder": "windowed-guided-matching", "model": "predecoder-d5-int8", "p": 0.003, "distance": 9,
              "rounds_per_s": 1_954_321.0, "single_rounds_per_s": 12.5, "table": [row], "window_ler_check": check}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(stream_table(result))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert all(cell in text for cell in ("1,954k", " 12 ", "86.8k", "10.0/12.3k", "0.23/10.3", "120.6"))
