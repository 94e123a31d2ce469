import json
import subprocess
import sys

import pytest

from nqec.cli import main


def test_evaluate_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--decoder", "matching", "-d", "3", "-r", "2", "-p", "0.004", "--shots", "5000",
                 "--seed", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "matching" in text and "LER per shot" in text and "correlated matching LER" in text
    record = json.loads(out.read_text())
    assert record["ler_ratio"] == 1.0 and record["correlated_ler"] > 0 and record["peak_rss_mb"] > 0
    assert record["shots"] == 5000 and record["spec"]["rounds"] == 2 and record["seed"] is not None
    assert record["command"].startswith("nqec")


@pytest.mark.parametrize("width", [80, 100, 200])
def test_evaluation_tables_fit_the_terminal(width):
    """Narrow terminals get one vertical table per result, wide ones a row per result; no line is cut."""
    import io

    from rich.console import Console

    from decoder import CodeSpec
    from training.evaluate import evaluate_sweep
    from training.report import evaluation_table

    results = evaluate_sweep([CodeSpec(3, 3, 0.004), CodeSpec(5, 5, 0.004)], "matching", shots=2000, seed=1)
    for record in results:
        record["model"] = "a-long-model-name-d5"
    console = Console(file=io.StringIO(), width=width)
    console.print(evaluation_table(results, width=width))
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    assert sum("d=5 r=5 p=0.004" in line for line in lines) == 1  # each experiment named once, unbroken


def test_sweep_json_feeds_plot(tmp_path):
    out = tmp_path / "sweep.json"
    assert main(["evaluate", "-d", "3,5", "-p", "0.003,0.006", "--shots", "3000", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4
    png = tmp_path / "ler.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "-d", "4"], "distance must be an odd integer >= 3, got 4"),
    (["evaluate", "-d", "1"], "distance must be an odd integer >= 3, got 1"),
    (["evaluate", "-p", "0.6"], "p must be in (0, 0.5), got 0.6"),
    (["evaluate", "-r", "0"], "rounds must be an integer >= 1, got 0"),
    (["evaluate", "--decoder", "magic"], "unknown decoder 'magic'; expected one of"),
    (["plot", "/nonexistent.json"], "results file not found"),
    (["evaluate", "--decoder", "matching-correlated", "--matching", "uncorrelated"], "is correlated matching"),
])
def test_user_mistakes_give_one_line_and_nonzero_exit(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["evaluate", "-p", "abc"], ["evaluate", "--shots", "0"], ["evaluate", "--noise", "x"]])
def test_argument_type_errors_exit_two(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_console_script_runs_and_fails_cleanly():
    proc = subprocess.run([sys.executable, "-m", "nqec", "evaluate", "-d", "6"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nqec evaluate: error: distance must be an odd integer >= 3, got 6"


def test_bench_data_reports_ratio(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "data", "-d", "3", "--batches", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for stream in ("circuit", "dem"):
        assert result["streams"][stream]["ratio"] > 0


def test_bench_decode_measures_the_pipeline_beside_both_matching_modes(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--model", "predecoder-fpga", "-d", "3,5", "--shots", "300", "--seconds", "0.05",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["distance"] for row in result["rows"]] == [3, 5]
    for row in result["rows"]:
        assert row["shots"] == 300 and row["shots_per_s"] > 0
        assert row["vs_correlated"] == pytest.approx(row["shots_per_s"] / row["correlated_shots_per_s"])
    assert "command" in result and "cores" in result["machine"]
    assert main(["bench", "decode", "--model", "transformer-d3", "-d", "3", "--shots", "10"]) == 2
    assert "needs a predecoder model" in capsys.readouterr().err


def test_table_joins_pipelines_evaluated_on_the_same_shots(tmp_path, capsys):
    paths = []
    for decoder, seed in (("guided-matching", 5), ("predecoder+matching", 5), ("predecoder+matching", 6)):
        paths.append(str(tmp_path / f"{decoder}-{seed}.json"))
        assert main(["evaluate", "--decoder", decoder, "--model", "predecoder-fpga", "-d", "3", "--shots", "3000",
                     "--seed", str(seed), "--json", paths[-1]]) == 0
    out = tmp_path / "table.json"
    assert main(["table", *paths[:2], "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    first, second = (json.loads(open(path).read()) for path in paths[:2])
    assert row["shots"] == 3000 and row["correlated_errors"] == first["correlated_errors"] == second["correlated_errors"]
    hard = row["pipelines"]["predecoder+matching (predecoder-fpga)"]
    assert hard["errors"] == second["errors"] and hard["vs_matching"] == pytest.approx(second["ler_ratio"])
    assert set(row["pipelines"]) == {"guided-matching (predecoder-fpga)", "predecoder+matching (predecoder-fpga)"}
    capsys.readouterr()
    assert main(["table", "--markdown", paths[0]]) == 0
    assert capsys.readouterr().out.startswith("| d | p | shots | matching | correlated |")
    assert main(["table", *paths]) == 2
    assert "decoded different shots (seed " in capsys.readouterr().err


def test_record_keys_the_default_pipeline_by_spec_and_the_others_by_pipeline_and_spec(tmp_path):
    import shutil

    from decoder.bundle import Bundle

    bundle = tmp_path / "fpga-copy"
    shutil.copytree(Bundle.load("predecoder-fpga").path, bundle)
    for decoder in ("predecoder+matching", "guided-matching"):
        assert main(["evaluate", "--decoder", decoder, "--model", str(bundle), "-d", "3", "--shots", "500",
                     "--record"]) == 0
    metrics = Bundle.load(bundle).manifest["metrics"]
    spec = "d=3 r=3 p=0.003 Z-basis depolarizing"
    assert metrics[f"evaluate {spec}"]["decoder"] == "predecoder+matching"
    assert metrics[f"evaluate guided-matching {spec}"]["decoder"] == "guided-matching"


@pytest.mark.parametrize("exact_windows, status", [(1000, 0), (997, 1)])
def test_fpga_csim_fails_when_the_emulation_is_not_bit_exact(monkeypatch, capsys, exact_windows, status):
    """`make fpga-csim` must fail when the numpy emulation and the C simulation disagree on a window."""
    import fpga.convert
    import fpga.csim

    result = {"model": "m", "csim_windows": 1000, "csim_seconds": 1.0, "edge_agreement": 1.0,
              "emulation_bitexact_windows": exact_windows, "emulation_bitexact": exact_windows == 1000,
              "max_abs_logit_diff": 0.01, "shots": 10, "ler_fixed": 0.1, "ler_float": 0.1,
              "ler_ratio_fixed_vs_float": 1.0, "shots_with_different_outcome": 0}
    monkeypatch.setattr(fpga.convert, "convert", lambda *args, **kwargs: None)
    monkeypatch.setattr(fpga.csim, "csim_report", lambda *args: dict(result))
    assert main(["fpga", "csim"]) == status
    err = capsys.readouterr().err
    assert ("differs from the C simulation on 3 of 1000 windows" in err) == bool(status)


@pytest.fixture(scope="module")
def shipped_server():
    """A server of the shipped bundles (and matching at their specs) on a free loopback port."""
    from server.app import ServerConfig, start_server
    from server.models import load_models

    server = start_server(ServerConfig(port=0), load_models(matching_specs=(), any_length_specs=()))
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.mark.parametrize("model, argv", [
    ("predecoder-d5", ["-d", "5", "-p", "0.003"]),  # the bundle's spec is p=0.006: decoded there on both sides
    ("predecoder-d5-guided", ["-d", "5"]),
    ("transformer-d3", ["-d", "3"]),
    ("matching-correlated", ["-d", "5", "-p", "0.006"]),
])
def test_client_decode_checks_every_listed_model_at_the_servers_spec(shipped_server, monkeypatch, capsys, model, argv):
    from server.client import DecoderClient

    deadlines = []
    decode = DecoderClient.decode
    monkeypatch.setattr(DecoderClient, "decode", lambda self, *a, timeout=None: deadlines.append(timeout) or
                        decode(self, *a, timeout=timeout))
    assert main(["client", "decode", "--target", shipped_server, "--model", model, *argv, "--shots", "3000",
                 "--timeout", "7.5"]) == 0
    out = capsys.readouterr().out
    assert "agrees with in-process decoding: yes" in out and deadlines == [7.5]
    if model == "predecoder-d5":
        assert "predecoder+matching at d=5 r=5 p=0.006" in out


@pytest.mark.parametrize("model, argv, expected", [
    ("no-such-model", [], "NOT_FOUND: unknown model 'no-such-model'"),
    ("predecoder-d5", ["-d", "3"], "model 'predecoder-d5' decodes d=5 r=5 p=0.006 Z-basis depolarizing; -d/-r/--basis "
                                   "give d=3 r=3 p=0.003"),
    ("matching-d5-p0.006-z-depolarizing", [], "decodes experiments of any length through DecodeStream"),
])
def test_client_decode_refuses_before_decoding(shipped_server, monkeypatch, capsys, model, argv, expected):
    from server.client import DecoderClient

    monkeypatch.setattr(DecoderClient, "decode", lambda *a, **k: pytest.fail("decoded a model it should refuse"))
    assert main(["client", "decode", "--target", shipped_server, "--model", model, *argv, "--shots", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_serve_passes_every_option_to_its_server_config(monkeypatch):
    import server.app
    from server.config import ServerConfig

    configs = []
    monkeypatch.setattr(server.app, "serve_forever", configs.append)
    assert main(["serve"]) == 0 and configs[-1] == ServerConfig()
    assert main(["serve", "--stream-idle-s", "2.5", "--max-streams-per-client", "3", "--port", "0"]) == 0
    assert (configs[-1].stream_idle_s, configs[-1].max_streams_per_client, configs[-1].port) == (2.5, 3, 0)
    assert main(["serve", "--no-any-length"]) == 0 and configs[-1].any_length is False


@pytest.mark.parametrize("argv, expected", [
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--models", "/nonexistent"], "--models '/nonexistent' is not a directory"),
    (["--stream-idle-s", "0"], "--stream-idle-s must be > 0"),
])
def test_serve_settings_that_cannot_work_give_one_line_and_exit_two(argv, expected):
    proc = subprocess.run([sys.executable, "-m", "nqec", "serve", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_demo_ends_with_one_summary_table_that_fits_80_columns(tmp_path, monkeypatch, capsys):
    """Every shipped model in each pipeline at d=5 beside both PyMatching modes on the same shots;
    transformer-d3 on a row of its own spec; then one sentence."""
    from decoder.bundle import PIPELINES, Bundle, shipped_models

    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "demo.json"
    assert main(["demo", "--shots", "200", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert " ".join(lines).split("of that spec.")[1].split()[0] in ("At", "Too")  # the closing sentence
    rows = json.loads(out.read_text())["rows"]
    expected = [("matching", None), ("matching-correlated", None)] + [
        (pipeline, name) for name in shipped_models() for pipeline in PIPELINES[Bundle.load(name).kind]]
    assert [(row["decoder"], row["model"]) for row in rows] == expected
    for row in rows:
        d = 3 if row["model"] == "transformer-d3" else 5
        assert (row["spec"]["distance"], row["spec"]["p"], row["shots"], row["headline"]) == (d, 0.003, 200, d == 5)
        assert row["ler_ci"][0] <= row["ler"] <= row["ler_ci"][1] and row["shots_per_s"] > 0
        line = next(line for line in lines if line.startswith(f"{row['decoder']} ") and (row["model"] or "-") in line)
        assert line.split()[2] == f"d={d}"  # one line per row: decoder, model, spec, LER, interval, ratios, shots/s
    assert sum(line.startswith("matching ") for line in lines) == 1  # matching's rows are the headline spec's only
    assert "transformer-d3 runs only at its own spec (d=3 r=3 p=0.003)" in " ".join(" ".join(lines).split())
