"""The experiment is its circuit: a :class:`CodeSpec` builds one, a :class:`CircuitSpec` reads the user's.

Both offer what downstream code uses: ``circuit()``, ``dem()``, ``label()``, ``to_dict()`` and,
when the circuit is a rotated surface-code memory experiment, ``distance``, ``rounds`` and
``basis`` (a circuit file's are inferred from its detector coordinates). :func:`with_dem`
gives an experiment the probabilities of another DEM of the same structure (an estimated one).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d3.stim"
    >>> CodeSpec(3, 3, 0.001).circuit().to_file(path)
    >>> spec = CircuitSpec.from_file(path)
    >>> spec.distance, spec.rounds, spec.basis, spec.dem().num_detectors
    (3, 3, 'z', 24)
    >>> experiment_from_dict(spec.to_dict()) == spec
    True
    >>> repetition = pathlib.Path(path).with_name("rep.stim")
    >>> stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3).to_file(repetition)
    >>> CircuitSpec.from_file(repetition).surface_code_problem
    'its detectors need (x, y, t) coordinates; 8 of its 8 detectors have fewer'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np
import stim

from decoder.edges import error_components
from decoder.errors import NqecError
from decoder.layout import Layout
from decoder.spec import CodeSpec


@dataclasses.dataclass(frozen=True)
class CircuitSpec:
    """A memory experiment given by a Stim circuit file, recorded by its path and sha256.

    ``family``, ``distance``, ``rounds`` and ``basis`` are those of a rotated surface-code memory
    experiment when the circuit is one (inferred from its detector coordinates), else None, and
    :attr:`surface_code_problem` says why not.
    """

    path: str
    sha256: str

    @classmethod
    def from_file(cls, path: str | Path) -> "CircuitSpec":
        """Read and check a ``.stim`` circuit file: it must parse and have detectors and an observable."""
        spec = cls(str(path), _sha256(path))
        spec.circuit()
        return spec

    def circuit(self) -> stim.Circuit:
        """The circuit (cached; copy before mutating). Raises NqecError if the file changed since."""
        return _load_circuit(self.path, self.sha256)

    def dem(self) -> stim.DetectorErrorModel:
        """The detector error model, decomposed into graphlike pieces where Stim can (as sinter does)."""
        return _circuit_dem(self.path, self.sha256)

    @functools.cached_property
    def _geometry(self) -> tuple[int, int, str] | str:
        return _surface_memory_geometry(self.circuit())

    @property
    def surface_code_problem(self) -> str | None:
        """None for a rotated surface-code memory circuit with detector coordinates, else what is missing."""
        return self._geometry if isinstance(self._geometry, str) else None

    @property
    def family(self) -> str | None:
        return None if self.surface_code_problem else "rotated_surface"

    @property
    def distance(self) -> int | None:
        return None if self.surface_code_problem else self._geometry[0]

    @property
    def rounds(self) -> int | None:
        return None if self.surface_code_problem else self._geometry[1]

    @property
    def basis(self) -> str | None:
        return None if self.surface_code_problem else self._geometry[2]

    p = None  # a circuit file's noise is whatever its instructions say
    noise = "circuit file"

    def same_geometry(self, other) -> bool:
        """True when both are the same rotated surface-code memory geometry (as :meth:`CodeSpec.same_geometry`)."""
        return self.family is not None and (self.family, self.distance, self.rounds, self.basis) == (
            other.family, other.distance, other.rounds, other.basis)

    def label(self) -> str:
        if self.surface_code_problem:
            circuit = self.circuit()
            return f"{Path(self.path).name} ({circuit.num_detectors} detectors, {circuit.num_observables} observables)"
        return f"{Path(self.path).name} (d={self.distance} r={self.rounds} {self.basis.upper()}-basis)"

    def to_dict(self) -> dict:
        """The file's path and sha256 (the circuit is not embedded), with the inferred geometry."""
        return {"circuit_file": self.path, "sha256": self.sha256, "family": self.family, "distance": self.distance,
                "rounds": self.rounds, "basis": self.basis, "p": None, "noise": self.noise, "label": self.label()}

    @classmethod
    def from_dict(cls, data: dict) -> "CircuitSpec":
        """The experiment of :meth:`to_dict`; the file must still have the recorded sha256."""
        _check_unchanged(data["circuit_file"], data["sha256"])
        return cls.from_file(data["circuit_file"])


def experiment_from_dict(data: dict) -> CodeSpec | CircuitSpec:
    """A :class:`CircuitSpec` from a dict with ``circuit_file``, else a :class:`CodeSpec`."""
    return CircuitSpec.from_dict(data) if "circuit_file" in data else CodeSpec.from_dict(data)


class DemSpec:
    """An experiment known only by its detector error model file: matching decodes it; a network
    also needs the circuit (its detector coordinates and ancillas), which a DEM does not carry."""

    family = None
    surface_code_problem = ("a DEM alone carries no circuit, and a network reads the circuit's detector "
                            "coordinates and ancillas: give the circuit file")

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.sha256 = _sha256(path)
        self._dem = load_dem(path)

    def dem(self) -> stim.DetectorErrorModel:
        return self._dem

    def label(self) -> str:
        return f"{Path(self.path).name} ({self._dem.num_detectors} detectors, {self._dem.num_observables} observables)"

    def to_dict(self) -> dict:
        return {"dem_file": self.path, "sha256": self.sha256, "label": self.label()}


def load_dem(path: str | Path) -> stim.DetectorErrorModel:
    """A ``.dem`` file as a :class:`stim.DetectorErrorModel` (NqecError if it does not parse)."""
    try:
        return stim.DetectorErrorModel.from_file(str(path))
    except (OSError, ValueError) as exc:
        raise NqecError(f"{path} is not a readable Stim detector error model: {str(exc).splitlines()[0]}") from None


class WithDem:
    """``experiment`` whose ``dem()`` is ``dem``: the same structure with other probabilities (e.g.
    estimated from detection events); everything else is the experiment's. Built by :func:`with_dem`."""

    def __init__(self, experiment, dem: stim.DetectorErrorModel):
        self.experiment = experiment
        self._dem = dem

    def dem(self) -> stim.DetectorErrorModel:
        return self._dem

    def __getattr__(self, name: str):
        if name == "experiment":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.experiment, name)


def with_dem(experiment, dem: stim.DetectorErrorModel) -> WithDem:
    """``experiment`` decoded with ``dem``'s probabilities; ``dem`` must have the same detectors,
    observables and matching-graph edges (with the same observable masks) as ``experiment.dem()``.

    Example:
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> with_dem(spec, CodeSpec(3, 3, 0.001).dem()).dem() == CodeSpec(3, 3, 0.001).dem()
        True
        >>> with_dem(spec, CodeSpec(3, 5, 0.001).dem())
        Traceback (most recent call last):
        ...
        decoder.errors.NqecError: the given DEM has 40 detectors and 1 observables; the experiment's has 24 and 1
    """
    check_same_structure(dem, experiment.dem())
    return WithDem(experiment, dem)


def check_same_structure(dem: stim.DetectorErrorModel, reference: stim.DetectorErrorModel,
                         what: str = "the given DEM", of: str = "the experiment's") -> None:
    """Raise NqecError unless ``dem`` has ``reference``'s detectors, observables and graph edges."""
    if (dem.num_detectors, dem.num_observables) != (reference.num_detectors, reference.num_observables):
        raise NqecError(f"{what} has {dem.num_detectors} detectors and {dem.num_observables} observables; "
                        f"{of} has {reference.num_detectors} and {reference.num_observables}")
    edges, expected = _graph_edges(dem), _graph_edges(reference)
    extra, missing = sorted(set(edges) - set(expected)), sorted(set(expected) - set(edges))
    if extra or missing:
        shown = "; ".join(f"{len(keys)} {where} (e.g. {_edge_text(keys[0])})"
                          for keys, where in ((extra, f"only in {what}"), (missing, f"only in {of}")) if keys)
        raise NqecError(f"{what} has other edges than {of}: {shown}")
    flipped = [key for key in edges if edges[key] != expected[key]]
    if flipped:
        raise NqecError(f"{what} flips other observables than {of} on {len(flipped)} edges "
                        f"(e.g. {_edge_text(flipped[0])})")


def _graph_edges(dem: stim.DetectorErrorModel) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Detectors of each graphlike piece of the DEM's errors -> the observables it flips."""
    edges = {}
    for instruction in dem.flattened():
        if instruction.type == "error":
            for component in error_components(instruction.targets_copy()):
                dets = tuple(sorted(t.val for t in component if t.is_relative_detector_id()))
                edges[dets] = tuple(sorted(t.val for t in component if t.is_logical_observable_id()))
    return edges


def _edge_text(detectors: tuple[int, ...]) -> str:
    return " ".join(f"D{d}" for d in detectors) + (" and the boundary" if len(detectors) == 1 else "")


def _surface_memory_geometry(circuit: stim.Circuit) -> tuple[int, int, str] | str:
    """``(distance, rounds, basis)`` of a rotated surface-code memory circuit, or what keeps it from being one."""
    n = circuit.num_detectors
    coords = circuit.get_detector_coordinates()
    short = n - sum(len(c) >= 3 for c in coords.values())
    if short:
        return f"its detectors need (x, y, t) coordinates; {short} of its {n} detectors have fewer"
    try:
        layout = Layout.from_circuit(circuit)
    except NqecError as exc:
        return str(exc)
    _, times, height, width = layout.shape
    distance, rounds = height - 1, times - 1
    first = np.unique(layout.type_index[layout.t_index == 0])
    if not (circuit.num_observables == 1 and height == width and distance >= 3 and distance % 2 and rounds >= 1
            and n == (distance * distance - 1) * rounds and len(first) == 1
            and np.sum(layout.t_index == 0) == (distance * distance - 1) // 2):
        return (f"a different code: {n} detectors on a {height}x{width} grid of ancillas over {times} detector rounds, "
                f"{circuit.num_observables} observables; a rotated surface-code memory experiment of distance d has "
                "(d*d-1)*rounds detectors on a (d+1)x(d+1) grid, half of them in the first round, and one observable")
    return distance, rounds, "x" if first[0] == 0 else "z"


def _sha256(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise NqecError(f"cannot read circuit file {path}: {exc.strerror}") from None


def _check_unchanged(path: str, sha256: str) -> None:
    if _sha256(path) != sha256:
        raise NqecError(f"circuit file {path} changed since it was recorded (sha256 {sha256[:12]}...)")


@functools.lru_cache(maxsize=8)
def _load_circuit(path: str, sha256: str) -> stim.Circuit:
    _check_unchanged(path, sha256)
    try:
        circuit = stim.Circuit.from_file(path)
    except ValueError as exc:
        raise NqecError(f"{path} is not a Stim circuit: {str(exc).splitlines()[0]}") from None
    if circuit.num_detectors == 0 or circuit.num_observables == 0:
        raise NqecError(f"{path}: a memory experiment needs DETECTOR and OBSERVABLE_INCLUDE instructions; "
                        f"the circuit has {circuit.num_detectors} detectors and {circuit.num_observables} observables")
    return circuit


@functools.lru_cache(maxsize=8)
def _circuit_dem(path: str, sha256: str) -> stim.DetectorErrorModel:
    circuit = _load_circuit(path, sha256)
    try:
        return circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    except ValueError:
        return circuit.detector_error_model(approximate_disjoint_errors=True)
