"""Code specifications: which memory experiment to simulate, and its Stim circuit and DEM."""

from __future__ import annotations

import dataclasses
import functools
import math

import stim

from decoder.errors import NqecError
from decoder.noise import add_si1000_noise

FAMILIES = ("rotated_surface",)
BASES = ("z", "x")
NOISE_MODELS = ("depolarizing", "si1000")


@dataclasses.dataclass(frozen=True)
class CodeSpec:
    """A rotated surface-code memory experiment under circuit-level noise.

    Example:
        >>> spec = CodeSpec(distance=5, rounds=5, p=0.003)
        >>> spec.circuit().num_detectors
        120
    """

    distance: int
    rounds: int
    p: float
    basis: str = "z"
    noise: str = "depolarizing"
    family: str = "rotated_surface"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise NqecError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if isinstance(self.distance, bool) or not isinstance(self.distance, int) or self.distance < 3 or self.distance % 2 == 0:
            raise NqecError(f"distance must be an odd integer >= 3, got {self.distance!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise NqecError(f"rounds must be an integer >= 1, got {self.rounds!r}")
        if not isinstance(self.p, (int, float)) or not math.isfinite(self.p) or not 0 < self.p < 0.5:
            raise NqecError(f"noise strength p must be in (0, 0.5), got {self.p!r}")
        if self.basis not in BASES:
            raise NqecError(f"basis must be one of {BASES}, got {self.basis!r}")
        if self.noise not in NOISE_MODELS:
            raise NqecError(f"noise model must be one of {NOISE_MODELS}, got {self.noise!r}")
        object.__setattr__(self, "p", float(self.p))

    def circuit(self) -> stim.Circuit:
        """The noisy Stim circuit of this experiment (cached; copy before mutating)."""
        return _build_circuit(self)

    def dem(self) -> stim.DetectorErrorModel:
        """The detector error model, with errors decomposed into graphlike pieces."""
        return _build_dem(self)

    def with_p(self, p: float) -> "CodeSpec":
        """The same experiment at another noise strength."""
        return dataclasses.replace(self, p=p)

    def same_geometry(self, other: "CodeSpec") -> bool:
        """True when both specs give the same detectors and observables (noise may differ)."""
        return (self.family, self.distance, self.rounds, self.basis) == (
            other.family, other.distance, other.rounds, other.basis)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CodeSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise NqecError(f"unknown code spec keys {sorted(unknown)}; expected a subset of {sorted(fields)}")
        return cls(**data)

    def label(self) -> str:
        return f"d={self.distance} r={self.rounds} p={self.p:g} {self.basis.upper()}-basis {self.noise}"


@functools.lru_cache(maxsize=64)
def _build_circuit(spec: CodeSpec) -> stim.Circuit:
    task = f"surface_code:rotated_memory_{spec.basis}"
    if spec.noise == "depolarizing":
        return stim.Circuit.generated(
            task,
            distance=spec.distance,
            rounds=spec.rounds,
            after_clifford_depolarization=spec.p,
            before_round_data_depolarization=spec.p,
            before_measure_flip_probability=spec.p,
            after_reset_flip_probability=spec.p,
        )
    noiseless = stim.Circuit.generated(task, distance=spec.distance, rounds=spec.rounds)
    return add_si1000_noise(noiseless, spec.p)


@functools.lru_cache(maxsize=64)
def _build_dem(spec: CodeSpec) -> stim.DetectorErrorModel:
    return _build_circuit(spec).detector_error_model(decompose_errors=True)
