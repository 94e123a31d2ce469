"""Model bundles: ``model.onnx`` + ``manifest.json`` (+ optional ``model.pt``), run with onnxruntime.

A bundle is the contract between training, the server and the FPGA flow. Loading and
decoding import onnxruntime, numpy, stim and pymatching only (never torch).

Example:
    >>> bundle = Bundle.load("predecoder-fpga")          # a shipped name, or a directory
    >>> decoder = bundle.decoder(CodeSpec(9, 9, 0.003))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import stim

from decoder.errors import NqecError
from decoder.layout import Layout
from decoder.spec import CodeSpec

FORMAT_VERSION = 1
KINDS = ("predecoder", "transformer")
PIPELINES = {"predecoder": ("predecoder+matching", "guided-matching"), "transformer": ("transformer",)}
SECTION_KEYS = {"predecoder": {"directions", "window", "threshold", "require_lit", "isolated_only"},
                "transformer": {"architecture", "fallback_threshold"}}
SHIPPED_DIR = Path(__file__).parent / "pretrained"
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
PARALLEL_ROWS = 256  # network inputs with more rows than this are split across the CPU's cores


@functools.cache
def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


@functools.cache
def _core_pool() -> ThreadPoolExecutor:
    """One thread per core, shared by every bundle's network calls."""
    return ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="nqec-network")


@functools.cache
def _register_shared_arena() -> None:
    """One CPU memory arena for every onnxruntime session of this process (registered once).

    Each session's own arena keeps its peak activations for good; a server holding seven
    pipelines' sessions held ~1.4 GiB that way, ~0.66 GiB with the arena shared."""
    import onnxruntime

    memory = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                       onnxruntime.OrtMemType.DEFAULT)
    onnxruntime.create_and_register_allocator(memory, onnxruntime.OrtArenaCfg(0, -1, -1, -1))


def shipped_models() -> list[str]:
    """Names of the bundles that ship with the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / MANIFEST).is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped model name or a bundle directory -> the bundle directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in shipped_models():
        return SHIPPED_DIR / str(name_or_path)
    raise NqecError(f"unknown model {str(name_or_path)!r}: expected a bundle directory or one of the shipped "
                    f"models ({', '.join(shipped_models()) or 'none shipped'})")


class Bundle:
    """A loaded, validated model bundle."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.kind: str = manifest["kind"]
        self.spec = CodeSpec.from_dict(manifest["spec"])
        self.layout = Layout.from_dict(manifest["layout"])

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Bundle":
        """Load and validate a bundle; every inconsistency raises NqecError naming what was expected."""
        path = resolve_model(name_or_path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise NqecError(f"{path} is not a model bundle: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise NqecError(f"{manifest_path} is not valid JSON: {exc.msg}") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise NqecError(f"{manifest_path}: unknown bundle format version {version!r}; this nqec reads version {FORMAT_VERSION}")
        missing = [key for key in ("name", "kind", "spec", "circuit", "layout", "onnx") if key not in manifest]
        if missing:
            raise NqecError(f"{manifest_path}: missing keys {missing}")
        if manifest["kind"] not in KINDS:
            raise NqecError(f"{manifest_path}: unknown model kind {manifest['kind']!r}; expected one of {KINDS}")
        section_keys = SECTION_KEYS[manifest["kind"]]
        missing = sorted(section_keys - set(manifest.get(manifest["kind"], {})))
        if missing:
            raise NqecError(f"{manifest_path}: the {manifest['kind']} section lacks {missing}")
        if not (path / manifest["onnx"]["file"]).is_file():
            raise NqecError(f"bundle {path} is missing its ONNX file {manifest['onnx']['file']}")
        bundle = cls(path, manifest)
        bundle._check_consistency()
        return bundle

    def _check_consistency(self) -> None:
        circuit = stim.Circuit(self.manifest["circuit"])
        if Layout.from_circuit(circuit) != self.layout:
            raise NqecError(f"bundle {self.path}: the manifest's layout does not match its circuit")
        if circuit.num_detectors != self.spec.circuit().num_detectors:
            raise NqecError(f"bundle {self.path}: circuit has {circuit.num_detectors} detectors but spec "
                            f"{self.spec.label()} has {self.spec.circuit().num_detectors}")
        declared = self.manifest["onnx"]["inputs"][0]["shape"]
        actual = [d.dim_value or d.dim_param for d in self._onnx_input_dims()]
        if len(declared) != len(actual) or any(isinstance(a, int) and a != d for a, d in zip(actual, declared)):
            raise NqecError(f"bundle {self.path}: ONNX input shape {actual} does not match manifest shape {declared}")
        if self.kind == "predecoder":
            channels = 2 * self.manifest["predecoder"]["window"]
            if declared[1] != channels:
                raise NqecError(f"bundle {self.path}: predecoder window needs {channels} input channels, ONNX has {declared[1]}")
        else:
            if declared[1:] != list(self.layout.shape):
                raise NqecError(f"bundle {self.path}: transformer input {declared[1:]} does not match the circuit's "
                                f"layout {list(self.layout.shape)}")

    def _onnx_input_dims(self):
        import onnx

        model = onnx.load(str(self.path / self.manifest["onnx"]["file"]), load_external_data=False)
        return model.graph.input[0].type.tensor_type.shape.dim

    @functools.cached_property
    def session(self):
        """The bundle's onnxruntime session (created on first use): one intra-op thread, so a small
        batch runs without waking a thread pool (a served single shot: 0.30 vs 0.38 ms), and
        :meth:`run` calls it on every core at once for large batches (on these small images that
        beats onnxruntime's own threads: int8 networks ~1.5x at 2 cores)."""
        import onnxruntime

        _register_shared_arena()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.use_env_allocators", "1")
        return onnxruntime.InferenceSession(str(self.path / self.manifest["onnx"]["file"]), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Run the network on float32 inputs (batch first); returns its only output. Batches of more
        than PARALLEL_ROWS rows are cut into one part per core, run concurrently (onnxruntime releases
        the GIL) and joined in order."""
        name = self.manifest["onnx"]["inputs"][0]["name"]
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if len(inputs) <= PARALLEL_ROWS or _cores() == 1:
            return self.session.run(None, {name: inputs})[0]
        session = self.session
        parts = np.array_split(inputs, _cores())
        return np.concatenate(list(_core_pool().map(lambda part: session.run(None, {name: part})[0], parts)))

    def stim_inputs(self, shots: int, seed: int, spec: CodeSpec | None = None) -> tuple[np.ndarray, int]:
        """Network inputs for ``shots`` Stim shots at ``spec`` (default: the bundle's), and the input
        rows per shot (a pre-decoder sees one window per round, a transformer one dense syndrome per shot)."""
        spec = spec or self.spec
        layout = self.layout if spec == self.spec else Layout.from_circuit(spec.circuit())
        events, _ = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
        dense = layout.to_dense(events)
        if self.kind == "predecoder":
            from decoder.predecoder import round_windows

            return round_windows(dense, self.manifest["predecoder"]["window"]), layout.shape[1]
        return dense, 1

    @property
    def matching_mode(self) -> str:
        """The matching mode of the pipeline's residual or fallback stage when none is asked for:
        the manifest's ``matching`` (the one that measured better), uncorrelated in older bundles."""
        return self.manifest[self.kind].get("matching", "uncorrelated")

    def decoder(self, spec: CodeSpec | None = None, *, pipeline: str | None = None, out_of_range: str = "error",
                matching: str | None = None, runner=None):
        """The pipeline this bundle defines, for ``spec`` (default: the bundle's own).

        ``pipeline``: a pre-decoder serves ``predecoder+matching`` (default, hard commits) and
        ``guided-matching`` (its edge posteriors as per-shot matching weights, mixed as the
        manifest's ``guided`` section says), in either memory basis (the other basis than its
        training's is seen transposed, types exchanged); a transformer serves ``transformer``.
        ``matching`` picks the residual/fallback matching mode (default :attr:`matching_mode`);
        ``runner`` replaces the ONNX network (e.g. the FPGA's fixed-point emulation).
        A transformer is tied to its spec's geometry: for another spec, ``out_of_range="error"``
        raises, ``"fallback"`` returns a pipeline whose every shot is answered by matching.
        """
        from decoder.matching import correlations_of

        spec = spec or self.spec
        pipeline = pipeline or PIPELINES[self.kind][0]
        if pipeline not in PIPELINES[self.kind]:
            raise NqecError(f"model {self.name!r} is a {self.kind} model: it serves {', '.join(PIPELINES[self.kind])}, "
                            f"not {pipeline!r}")
        correlations = correlations_of(matching or self.matching_mode)
        runner = runner or self.run
        section = self.manifest[self.kind]
        if self.kind == "predecoder":
            # the other basis is decoded in the transposed, type-exchanged frame (PreDecoderGeometry)
            directions = tuple(tuple(d) for d in section["directions"])
            if pipeline == "guided-matching":
                from decoder.guided import GuidedMatchingPipeline

                guided = dict(section.get("guided", {}))
                calibrated_mode = guided.pop("matching", "uncorrelated")
                mode = matching or calibrated_mode
                return GuidedMatchingPipeline(spec, runner, directions, window=section["window"],
                                              correlations=correlations_of(mode), network_basis=self.spec.basis,
                                              **guided)
            from decoder.predecoder import PreDecoderPipeline

            return PreDecoderPipeline(spec, runner, directions, window=section["window"],
                                      threshold=section["threshold"], require_lit=section["require_lit"],
                                      isolated_only=section["isolated_only"], correlations=correlations,
                                      network_basis=self.spec.basis)
        from decoder.transformer import TransformerPipeline

        if out_of_range == "error" and not spec.same_geometry(self.spec):
            raise NqecError(f"model {self.name!r} was trained for {self.spec.label()}; got {spec.label()}")
        return TransformerPipeline(spec, self.spec, runner, section["fallback_threshold"], correlations=correlations)

    def summary(self) -> dict:
        """Name, kind, spec, size and measured metrics, as ``nqec models`` shows them."""
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "spec": self.spec.to_dict(),
                "parameters": self.manifest.get("parameters"), "metrics": self.manifest.get("metrics", {}),
                "training": self.manifest.get("training", {}),
                "training_totals": lineage_totals(self.manifest.get("training", {}))}


def lineage_totals(provenance: dict) -> dict:
    """Samples and wall time of a run and every run it was fine-tuned from, with their machines.

    Example:
        >>> lineage_totals({"samples": 10, "wall_seconds": 2.0, "machine": "b", "parent": {"samples": 5,
        ...                 "wall_seconds": 1.0, "machine": "a"}})
        {'samples': 15, 'wall_seconds': 3.0, 'machines': ['a', 'b']}
    """
    runs = []
    while provenance:
        runs.append(provenance)
        provenance = provenance.get("parent")
    return {"samples": sum(run.get("samples", 0) for run in runs),
            "wall_seconds": sum(run.get("wall_seconds", 0.0) for run in runs),
            "machines": [run.get("machine", "-") for run in reversed(runs)]}
