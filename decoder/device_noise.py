"""Device noise files: per-qubit and per-coupler error rates, as a device calibration produces them.

A TOML or JSON file with three tables. Qubits are named by their ``"x,y"`` coordinates (Stim's
QUBIT_COORDS of ``stim.Circuit.generated("surface_code:rotated_memory_z", ...)``; data qubits sit at
odd, ancillas at even coordinates), couplers by two qubits, ``"x1,y1-x2,y2"`` in either order. Qubits
and couplers not listed take the defaults, and those a circuit lacks are ignored, so one file serves
every distance::

    description = "optional free text"

    [default]             # every qubit and coupler not listed; unset rates are 0
    gate1 = 0.0003        # DEPOLARIZE1 after a single-qubit gate
    idle = 0.0003         # DEPOLARIZE1 per gate layer the qubit sits out
    idle_measure = 0.002  # DEPOLARIZE1 per measure/reset layer the qubit sits out
    round_data = 0.0      # DEPOLARIZE1 on a data qubit at the start of every round
    reset = 0.002         # flip after a reset
    readout = 0.005       # flip before a measurement
    gate2 = 0.003         # DEPOLARIZE2 after a two-qubit gate (couplers)

    [qubits."5,5"]        # a listed qubit: its own rates, the defaults for the rest
    readout = 0.03

    [couplers."4,4-5,5"]
    gate2 = 0.015

Every rate is a probability in [0, 0.5). ``nqec circuit --noise-file FILE`` writes the circuit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path

import stim

from decoder.errors import NqecError
from decoder.noise import QubitRates, add_noise

SHIPPED_DIR = Path(__file__).parent / "devices"
QUBIT_KEYS = tuple(f.name for f in dataclasses.fields(QubitRates))
COUPLER_KEYS = ("gate2",)
Coords = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class DeviceNoise:
    """Per-qubit and per-coupler error rates, keyed by qubit coordinates.

    Example:
        >>> noise = DeviceNoise.from_dict({"default": {"gate2": 0.003, "readout": 0.005},
        ...                                "qubits": {"3,3": {"readout": 0.05}}})
        >>> circuit = noise.circuit(distance=3, rounds=3, basis="z")
        >>> circuit.num_detectors
        24
        >>> noise.qubit((3.0, 3.0)).readout, noise.qubit((1.0, 1.0)).readout
        (0.05, 0.005)
    """

    default: QubitRates
    default_gate2: float
    qubits: dict[Coords, QubitRates]
    couplers: dict[frozenset, float]
    description: str = ""

    def qubit(self, coords: Coords) -> QubitRates:
        """The rates of the qubit at ``coords`` (the defaults if it is not listed)."""
        return self.qubits.get(coords, self.default)

    def coupler(self, a: Coords, b: Coords) -> float:
        """The two-qubit gate rate of the coupler between ``a`` and ``b``."""
        return self.couplers.get(frozenset((a, b)), self.default_gate2)

    def apply(self, circuit: stim.Circuit) -> stim.Circuit:
        """A noiseless circuit whose qubits all have (x, y) QUBIT_COORDS -> the circuit under this noise."""
        coords = circuit.get_final_qubit_coordinates()
        used = {t.value for inst in circuit.flattened() for t in inst.targets_copy() if t.is_qubit_target}
        missing = sorted(q for q in used if len(coords.get(q, ())) < 2)
        if missing:
            raise NqecError(f"device noise names qubits by coordinates: qubits {missing[:5]} of the circuit have "
                            f"no (x, y) QUBIT_COORDS")
        at = {q: (float(c[0]), float(c[1])) for q, c in coords.items() if q in used}
        return add_noise(circuit, lambda q: self.qubit(at[q]) if q in at else QubitRates(),
                         lambda a, b: self.coupler(at[a], at[b]))

    def circuit(self, distance: int, rounds: int, basis: str = "z") -> stim.Circuit:
        """The rotated surface-code memory experiment under this noise."""
        if basis not in ("z", "x"):
            raise NqecError(f"basis must be 'z' or 'x', got {basis!r}")
        task = f"surface_code:rotated_memory_{basis}"
        return self.apply(stim.Circuit.generated(task, distance=distance, rounds=rounds))

    @classmethod
    def from_file(cls, path: str | Path) -> "DeviceNoise":
        """Read a ``.toml`` or ``.json`` noise file, or a shipped one by name (``example``)."""
        path = resolve_device(path)
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise NqecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "noise file") -> "DeviceNoise":
        """Validate and build; every mistake raises a one-line NqecError naming the key and what was expected."""
        _known(data, ("description", "default", "qubits", "couplers"), source)
        default = _table(data.get("default", {}), f"{source} [default]")
        _known(default, QUBIT_KEYS + COUPLER_KEYS, f"{source} [default]")
        base = _rates(default, QUBIT_KEYS, QubitRates(), f"{source} [default]")
        qubits = {}
        for name, table in _table(data.get("qubits", {}), f"{source} [qubits]").items():
            where = f'{source} [qubits."{name}"]'
            table = _table(table, where)
            _known(table, QUBIT_KEYS, where)
            qubits[_coords(name, where)] = _rates(table, QUBIT_KEYS, base, where)
        couplers = {}
        for name, table in _table(data.get("couplers", {}), f"{source} [couplers]").items():
            where = f'{source} [couplers."{name}"]'
            ends = name.split("-")
            if len(ends) != 2:
                raise NqecError(f"{where}: expected a coupler named 'x1,y1-x2,y2', got {name!r}")
            a, b = (_coords(end, where) for end in ends)
            if a == b:
                raise NqecError(f"{where}: expected two different qubits")
            table = _table(table, where)
            _known(table, COUPLER_KEYS, where)
            couplers[frozenset((a, b))] = _rate(table, "gate2", where, None)
        description = data.get("description", "")
        if not isinstance(description, str):
            raise NqecError(f"{source}: description: expected a string")
        return cls(default=base, default_gate2=_rate(default, "gate2", f"{source} [default]", 0.0),
                   qubits=qubits, couplers=couplers, description=description)


def resolve_device(name_or_path: str | Path) -> Path:
    """A noise file path, or the name of a shipped one (``example`` -> ``decoder/devices/example.toml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    raise NqecError(f"noise file {str(name_or_path)!r} not found: expected a .toml or .json file or one of the "
                    f"shipped devices ({', '.join(names) or 'none'})")


def _known(table: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise NqecError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(keys)}")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise NqecError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _rates(table: dict, keys: tuple[str, ...], base: QubitRates, where: str) -> QubitRates:
    return dataclasses.replace(base, **{key: _rate(table, key, where, None) for key in keys if key in table})


def _rate(table: dict, key: str, where: str, default: float | None) -> float:
    if key not in table and default is not None:
        return default
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value < 0.5:
        raise NqecError(f"{where}: {key}: expected a probability in [0, 0.5), got {value!r}")
    return float(value)


def _coords(name: str, where: str) -> Coords:
    parts = name.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = (float(v) for v in parts)
    except ValueError:
        raise NqecError(f"{where}: expected qubit coordinates 'x,y' (two numbers), got {name!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise NqecError(f"{where}: expected qubit coordinates 'x,y' (two finite numbers), got {name!r}")
    return (x, y)
