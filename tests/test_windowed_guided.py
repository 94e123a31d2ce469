"""Guided matching in the sliding window: mix 0 is windowed matching, slices streamed in any blocks
give the whole-block answers, and the network's gain survives the windows."""

import numpy as np
import pytest

from decoder import CodeSpec, NqecError
from decoder.bundle import Bundle
from decoder.windowed import SlidingWindowDecoder
from decoder.windowed_guided import guided_windows

FAMILY = CodeSpec(5, 5, 0.004)


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load("predecoder-fpga")


@pytest.fixture(scope="module")
def long_shots():
    spec = CodeSpec(5, 30, FAMILY.p)
    return spec.circuit().compile_detector_sampler(seed=5).sample(1000, separate_observables=True)


@pytest.mark.parametrize("commit, buffer", [(None, None), (3, 2)])
def test_mix_zero_gives_windowed_matching(bundle, long_shots, commit, buffer):
    events, _ = long_shots
    guided = guided_windows(bundle, FAMILY, mix=0.0, matching="uncorrelated", commit=commit, buffer=buffer)
    plain = SlidingWindowDecoder(FAMILY, commit=commit, buffer=buffer)
    differ = (guided.decode_batch(events, rounds=30) != plain.decode_batch(events, rounds=30)).any(axis=1).sum()
    assert differ <= 2  # measured 0 and 1 of 1,000: ties the compiled matcher's integer weights break otherwise


def test_windows_keep_the_whole_experiment_guided_answers(bundle, long_shots):
    """Same shots: windowed guided answers as whole-experiment guided does (within a few shots),
    and not as windowed matching in the same (correlated) mode does (the network is used)."""
    events, observables = long_shots
    windowed = guided_windows(bundle, FAMILY)
    answers = windowed.decode_batch(events, rounds=30)
    whole = bundle.decoder(CodeSpec(5, 30, FAMILY.p), pipeline="guided-matching").decode_batch(events)
    matching = SlidingWindowDecoder(FAMILY, correlations=windowed.correlations).decode_batch(events, rounds=30)
    errors = {name: int((a != observables).any(axis=1).sum()) for name, a in
              (("windowed", answers), ("whole", whole), ("matching", matching))}
    assert (answers != whole).any(axis=1).sum() <= 5, errors  # measured 1 of 1,000
    assert errors["windowed"] <= errors["whole"] + 4, errors
    assert (answers != matching).any(axis=1).sum() >= 3, errors  # measured 7: the weights moved some matchings


def test_slices_streamed_in_blocks_give_the_whole_block_answers(bundle, long_shots):
    """Experiments split at random rows into blocks that advance in turn: each block's answers
    are its rows of the whole block's, bit for bit (the network runs per block)."""
    events, _ = long_shots
    windowed = guided_windows(bundle, FAMILY)
    whole = windowed.decode_batch(events, rounds=30)
    sizes = windowed.slice_sizes(30)
    bounds = np.cumsum([0, *sizes])
    cuts = np.sort(np.random.default_rng(3).choice(np.arange(1, len(events)), 2, replace=False))
    blocks = np.split(np.arange(len(events)), cuts)
    streams = [windowed.open(len(rows)) for rows in blocks]
    held = []
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        for rows, stream in zip(blocks, streams):
            stream.push(events[rows, lo:hi])
        held.append(streams[0].held_bytes)
    for rows, stream in zip(blocks, streams):
        final = stream.finish(events[rows, bounds[-2]:])
        assert np.array_equal(final, whole[rows])
    half = len(held) // 2
    assert max(held[half:]) <= max(held[:half])  # memory held stops growing: a window's worth, whatever the length


def test_x_basis_experiments_and_bad_settings(bundle):
    spec = CodeSpec(5, 12, FAMILY.p, basis="x")
    events, observables = spec.circuit().compile_detector_sampler(seed=8).sample(400, separate_observables=True)
    windowed = guided_windows(bundle, CodeSpec(5, 5, FAMILY.p, basis="x"))
    whole = bundle.decoder(spec, pipeline="guided-matching").decode_batch(events)
    assert (windowed.decode_batch(events, rounds=12) != whole).any(axis=1).sum() <= 3
    with pytest.raises(NqecError, match="needs a pre-decoder"):
        guided_windows(Bundle.load("transformer-d3"), FAMILY)
    with pytest.raises(NqecError, match="0 <= mix <= 1"):
        guided_windows(bundle, FAMILY, mix=1.5)


def test_served_any_length_guided_model_equals_in_process_bit_for_bit(bundle):
    """Over gRPC (warmed up in the background, then SERVING): a block streamed slice by slice with
    partial corrections and single experiments answer as the in-process windowed guided decoder."""
    from server.app import ServerConfig, start_server
    from server.client import DecoderClient
    from server.generated import decoder_pb2 as pb2
    from server.models import ServedModel, guided_family_model_name
    from decoder.events import pack_bits

    family = CodeSpec(3, 3, 0.004)
    windowed = guided_windows(bundle, family)
    name = guided_family_model_name(bundle.name, family)
    model = ServedModel(name, "predecoder", windowed.name, family, None,
                        [windowed.first_slice, windowed.bulk_slice, windowed.final_slice], {}, windowed)
    running = start_server(ServerConfig(port=0), {name: model})
    assert running.wait_ready(60)
    try:
        client = DecoderClient([f"127.0.0.1:{running.port}"])
        info = client.model_info(name)
        assert info.any_length and info.kind == "predecoder" and info.window_commit == windowed.commit
        rounds = 17
        events = CodeSpec(3, rounds, family.p).circuit().compile_detector_sampler(seed=6).sample(64)
        expected = guided_windows(bundle, family).decode_batch(events, rounds=rounds)
        bounds = np.cumsum([0, *windowed.slice_sizes(rounds)])
        slices = [events[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        requests = [pb2.StreamRequest(blocks=[pb2.RoundBlock(block_id="b", model=name, num_experiments=64,
                                                             events=pack_bits(s).tobytes(), last=i == len(slices) - 1,
                                                             stream_corrections=True)],
                                      rounds=[pb2.Round(experiment_id="one", model=name, events=pack_bits(s[:1]).tobytes(),
                                                        last=i == len(slices) - 1)])
                    for i, s in enumerate(slices)]
        blocks, singles = [], []
        for response in client.stub().DecodeStream(iter(requests), timeout=60):
            blocks += list(response.blocks)
            singles += list(response.results)
        final = [b for b in blocks if not b.partial]
        assert len(final) == 1 and not final[0].error and any(b.partial for b in blocks)
        flips = np.frombuffer(final[0].observable_flips, np.uint8) & 1  # one byte per experiment's observables
        assert np.array_equal(flips.astype(bool), expected[:, 0]) and expected.any()
        assert set(final[0].stages) == {1}  # STAGE_NETWORK
        (single,) = singles
        assert bool(single.observable_flips[0] & 1) == bool(expected[0, 0]) and single.stage == 1
        client.close()
    finally:
        running.stop(grace=0)


def test_two_networks_of_one_geometry_share_the_window_matchers(bundle, long_shots):
    """predecoder-d5 and its 8-bit copy: one set of window matchers, each its own network's answers."""
    events, _ = long_shots
    float_model, int8_model = Bundle.load("predecoder-d5"), Bundle.load("predecoder-d5-int8")
    first = guided_windows(float_model, FAMILY)
    shared = guided_windows(int8_model, FAMILY, windows_of=first)
    alone = guided_windows(int8_model, FAMILY)
    answers = shared.decode_batch(events[:300], rounds=30)
    assert shared._windows is first._windows and len(first._windows) > 0
    assert np.array_equal(answers, alone.decode_batch(events[:300], rounds=30))
    with pytest.raises(NqecError, match="windows_of must be"):
        guided_windows(bundle, FAMILY, windows_of=first)  # predecoder-fpga: another network geometry


def _counting_network_calls(bundle, events: np.ndarray):
    """A windowed guided decoder, its answers on ``events`` (30 rounds), and the list its network
    calls append their row counts to from now on."""
    windowed = guided_windows(bundle, FAMILY)
    whole = windowed.decode_batch(events, rounds=30)
    calls = []
    network = windowed.network
    windowed.network = lambda inputs: (calls.append(len(inputs)), network(inputs))[1]
    return windowed, whole, calls


def test_the_network_runs_once_per_message_on_each_slice_once(bundle, long_shots):
    """Rounds pushed in messages: one network call per message, on the slices whose input window it
    completes, and every slice computed once; the final slice leaves only the last lookahead + 1
    slices to the answer. The answers are the whole block's."""
    events, _ = long_shots
    windowed, whole, calls = _counting_network_calls(bundle, events[:8])
    sizes = windowed.slice_sizes(30)
    bounds = np.cumsum([0, *sizes])
    stream = windowed.open(8)
    for first in range(0, 30, 10):
        stream.push_slices(events[:8, bounds[first]:bounds[first + 10]], 10)
    assert len(calls) == 3
    assert np.array_equal(stream.finish(events[:8, bounds[-2]:]), whole)
    assert calls == [8 * 9, 8 * 10, 8 * 10, 8 * (windowed.lookahead + 1)] and sum(calls) == 8 * len(sizes)


def test_a_large_push_runs_the_network_in_parts(bundle, long_shots, monkeypatch):
    """A push of more experiment-slices than NETWORK_ROWS (decode_batch pushes a whole experiment at
    once) goes to the network in parts of at most that many rows: memory stays bounded; same answers."""
    import decoder.windowed_guided as windowed_guided

    events, _ = long_shots
    windowed, whole, calls = _counting_network_calls(bundle, events[:8])
    monkeypatch.setattr(windowed_guided, "NETWORK_ROWS", 8 * 4)
    assert np.array_equal(windowed.decode_batch(events[:8], rounds=30), whole)
    assert max(calls) <= 8 * 4 and sum(calls) == 8 * len(windowed.slice_sizes(30))


def test_a_message_of_many_rounds_holds_a_windows_worth_of_logits(bundle, long_shots):
    """Once its windows are committed, a message's slices free their logits: what an experiment
    holds after messages of 29 rounds is what it holds after single rounds (no array of the
    message's logits kept alive behind one slice's view)."""
    events, _ = long_shots
    windowed = guided_windows(bundle, FAMILY)
    bounds = np.cumsum([0, *windowed.slice_sizes(30)])
    one_at_a_time, in_one_message = windowed.open(4), windowed.open(4)
    for t in range(29):
        one_at_a_time.push(events[:4, bounds[t]:bounds[t + 1]])
    in_one_message.push_slices(events[:4, :bounds[29]], 29)
    owners = {id(a.base if a.base is not None else a): (a.base if a.base is not None else a).nbytes
              for a in in_one_message.logits.values()}
    assert sum(owners.values()) <= sum(a.nbytes for a in one_at_a_time.logits.values())


def test_decoders_of_other_mixes_share_windows_but_not_weights(bundle, long_shots):
    """Window matchers shared between decoders of one geometry (windows_of) carry no mix: each
    decoder answers with its own mix and temperature, whichever built the windows first."""
    events, _ = long_shots
    alone = {mix: guided_windows(bundle, FAMILY, mix=mix).decode_batch(events[:300], rounds=30) for mix in (0.0, 0.9)}
    first = guided_windows(bundle, FAMILY, mix=0.9)
    first.decode_batch(events[:10], rounds=30)  # builds the shared windows
    for mix in (0.0, 0.9):
        shared = guided_windows(bundle, FAMILY, mix=mix, windows_of=first)
        assert shared._windows is first._windows
        assert np.array_equal(shared.decode_batch(events[:300], rounds=30), alone[mix])
    assert not np.array_equal(alone[0.0], alone[0.9])


def test_pushing_no_slices_or_no_experiments_changes_nothing(bundle, long_shots):
    events, _ = long_shots
    windowed = guided_windows(bundle, FAMILY)
    stream = windowed.open(4)
    assert stream.push_slices(np.zeros((4, 0), dtype=bool), 0) is None and stream.next_slice == 0
    assert windowed.decode_batch(events[:0], rounds=30).shape == (0, 1)


def test_the_network_skips_rows_without_events_and_gives_their_logits(bundle, long_shots):
    """Rows whose input window holds no event take the all-zero input's logits, computed once:
    bit for bit what the network gives them, and the network never sees them again."""
    windowed = guided_windows(bundle, FAMILY)
    rows = np.zeros((40, 2 * windowed.window, windowed.height, windowed.width), dtype=np.float32)
    rows[::3, 1, 2, 3] = 1.0
    rows[1::3, 0, 1, 1] = 1.0
    expected = bundle.run(rows)
    seen = []
    windowed.runner = lambda inputs: (seen.append(len(inputs)), bundle.run(inputs))[1]
    assert np.array_equal(windowed.network(rows), expected)
    assert np.array_equal(windowed.network(rows), expected)
    assert seen == [1, 27, 27]  # the all-zero row once, then the live rows of each call
