"""``nqec serve --circuit NAME=FILE``: the user's own circuits served next to the shipped models."""

import numpy as np
import pytest
import stim

from decoder.bundle import Bundle
from decoder.experiment import CircuitSpec
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec
from nqec.cli import main
from server.app import ServerConfig, start_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2


@pytest.fixture(scope="module")
def circuits(tmp_path_factory):
    """A spec's circuit written to a file, a device-noise circuit from ``nqec circuit``, a repetition code."""
    folder = tmp_path_factory.mktemp("circuits")
    CodeSpec(5, 5, 0.003).circuit().to_file(folder / "code.stim")
    assert main(["circuit", "-d", "5", "-r", "5", "--noise-file", "example", "--out", str(folder / "dev.stim")]) == 0
    stim.Circuit.generated("repetition_code:memory", distance=5, rounds=4,
                           before_round_data_depolarization=0.02).to_file(folder / "rep.stim")
    return {name: folder / f"{name}.stim" for name in ("code", "dev", "rep")}


@pytest.fixture(scope="module")
def client(circuits):
    running = start_server(ServerConfig(port=0, circuits=[f"{name}={path}" for name, path in circuits.items()]))
    client = DecoderClient([f"127.0.0.1:{running.port}"])
    yield client
    client.close()
    running.stop(grace=1)


def in_process(spec: CircuitSpec, model: str):
    """The decoder a served circuit model must equal: matching on the circuit's DEM, or the bundle's pipeline."""
    if model.startswith("matching"):
        return MatchingDecoder(spec.dem(), correlations=model == "matching-correlated")
    return Bundle.load("predecoder-fpga").decoder(spec, pipeline="guided-matching")


@pytest.mark.parametrize("name", ["code", "dev"])
def test_surface_code_circuits_serve_matching_and_fitting_networks(client, circuits, name):
    spec = CircuitSpec.from_file(circuits[name])
    events = spec.circuit().compile_detector_sampler(seed=5).sample(2000, bit_packed=True)
    answers = {}
    for model in ("matching", "matching-correlated", "predecoder-fpga-guided"):
        flips, _, _ = client.decode(f"{name}-{model}", events)
        assert np.array_equal(flips, in_process(spec, model).decode_batch(events)), model
        answers[model] = flips
    assert not np.array_equal(answers["matching"], answers["predecoder-fpga-guided"])  # the network is heard
    served = {info.name for info in client.list_models() if info.name.startswith(f"{name}-")}
    assert {f"{name}-predecoder-d5-int8", f"{name}-predecoder-d5-int8-guided"} <= served
    assert f"{name}-transformer-d3" not in served  # trained for d=3: skipped, not a failed start
    info = client.model_info(f"{name}-matching")
    assert list(info.detectors_per_round) == [12, 24, 24, 24, 24, 12] and info.num_detectors == 120


def test_streamed_rounds_of_a_circuit_equal_its_decode(client, circuits):
    spec = CircuitSpec.from_file(circuits["dev"])
    bits = spec.circuit().compile_detector_sampler(seed=6).sample(4)
    sizes = client.model_info("dev-matching-correlated").detectors_per_round
    bounds = np.cumsum([0, *sizes])
    requests = [pb2.StreamRequest(rounds=[
        pb2.Round(experiment_id=f"e{i}", model="dev-matching-correlated" if r == 0 else "",
                  events=np.packbits(bits[i, lo:hi], bitorder="little").tobytes(), last=r == len(sizes) - 1)
        for i in range(len(bits))]) for r, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]
    results = {res.experiment_id: res for response in client.stub().DecodeStream(iter(requests))
               for res in response.results}
    expected = MatchingDecoder(spec.dem(), correlations=True).decode_batch(bits)
    assert [bool(results[f"e{i}"].observable_flips[0] & 1) for i in range(len(bits))] == expected[:, 0].tolist()


def test_another_code_serves_matching_only(client, circuits):
    served = {info.name for info in client.list_models() if info.name.startswith("rep-")}
    assert served == {"rep-matching", "rep-matching-correlated"}
    spec = CircuitSpec.from_file(circuits["rep"])
    events = spec.circuit().compile_detector_sampler(seed=7).sample(1000, bit_packed=True)
    assert np.array_equal(client.decode("rep-matching", events)[0], MatchingDecoder(spec.dem()).decode_batch(events))
    assert list(client.model_info("rep-matching").detectors_per_round) == []  # no (x, y, t) layout: Decode only


@pytest.mark.parametrize("option, expected", [
    ("chip={missing}", "--circuit chip={missing}: no such circuit file"),
    ("chip={bad}", "is not a Stim circuit"),
    ("{code}", "--circuit expects NAME=FILE.stim"),
])
def test_bad_circuit_options_give_one_line_and_exit_two(tmp_path, circuits, capsys, option, expected):
    (tmp_path / "bad.stim").write_text("H 0\nNOT_AN_INSTRUCTION 1\n")
    paths = {"missing": tmp_path / "missing.stim", "bad": tmp_path / "bad.stim", "code": circuits["code"]}
    assert main(["serve", "--port", "0", "--circuit", option.format(**paths)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected.format(**paths) in err, err


def test_a_name_given_twice_is_refused(circuits, capsys):
    option = f"chip={circuits['rep']}"
    assert main(["serve", "--port", "0", "--circuit", option, "--circuit", option]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'chip-matching' is already served" in err, err
