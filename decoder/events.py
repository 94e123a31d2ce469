"""Validation and conversion of detection-event arrays at every interface.

Events come as ``bool`` ``[shots, num_detectors]`` (``uint8`` 0/1 accepted too), or
bit-packed ``uint8`` ``[shots, ceil(num_detectors / 8)]`` little-endian, as Stim's
``bit_packed=True`` produces.

Example:
    >>> import numpy as np
    >>> from decoder.spec import CodeSpec
    >>> circuit = CodeSpec(3, 3, 0.01).circuit()
    >>> packed, _ = circuit.compile_detector_sampler(seed=1).sample(4, separate_observables=True, bit_packed=True)
    >>> packed.shape, is_bit_packed(packed, circuit.num_detectors)
    ((4, 3), True)
    >>> bits = as_bool_events(packed, circuit.num_detectors)
    >>> bits.shape, bits.dtype, np.array_equal(pack_bits(bits), packed)
    ((4, 24), dtype('bool'), True)
"""

from __future__ import annotations

import numpy as np

from decoder.errors import NqecError


def packed_width(num_bits: int) -> int:
    """Bytes per shot of ``num_bits`` bit-packed bits."""
    return (num_bits + 7) // 8


def is_bit_packed(events: np.ndarray, num_detectors: int) -> bool:
    """Validate ``events`` and say whether it is bit-packed (raises NqecError if invalid)."""
    if not isinstance(events, np.ndarray):
        raise NqecError(f"detection events must be a numpy array, got {type(events).__name__}")
    packed = packed_width(num_detectors)
    expected = (f"bool [shots, {num_detectors}] or bit-packed uint8 [shots, {packed}]")
    if events.ndim != 2:
        raise NqecError(f"detection events must be 2-D, expected {expected}, got shape {events.shape}")
    if events.dtype == np.bool_:
        if events.shape[1] != num_detectors:
            raise NqecError(f"expected {expected}, got bool array of shape {events.shape}")
        return False
    if events.dtype == np.uint8:
        if events.shape[1] == packed and packed != num_detectors:
            return True
        if events.shape[1] == num_detectors:
            if events.size and events.max() > 1:
                raise NqecError(f"uint8 events of width {num_detectors} must be 0/1; expected {expected}")
            return False
        raise NqecError(f"expected {expected}, got uint8 array of shape {events.shape}")
    raise NqecError(f"expected {expected}, got dtype {events.dtype}")


def as_bool_events(events: np.ndarray, num_detectors: int) -> np.ndarray:
    """Return events as ``bool [shots, num_detectors]``, unpacking bit-packed input."""
    if is_bit_packed(events, num_detectors):
        return unpack_bits(events, num_detectors)
    return events.astype(np.bool_, copy=False)


def unpack_bits(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """Little-endian bit-packed ``uint8 [n, ceil(num_bits/8)]`` -> ``bool [n, num_bits]``."""
    return np.unpackbits(packed, axis=1, count=num_bits, bitorder="little").astype(np.bool_)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """``bool [n, k]`` -> little-endian bit-packed ``uint8 [n, ceil(k/8)]``."""
    return np.packbits(bits, axis=1, bitorder="little")
