"""Shot data files in Stim's formats (b8, 01, r8, ptb64, hits, dets), read and written in chunks.

Stim parses and writes every record (``stim.read_shot_data_file`` / ``stim.write_shot_data_file``);
this module only cuts a file at record boundaries, so a file of any size streams through in
bounded memory. ``b8`` records are already Stim's bit-packed rows and go straight to numpy.
A file whose size does not fit the bits per shot, a truncated record or an unknown format
raises :class:`NqecError`; :class:`ShotWriter` writes to a temporary file that replaces the
output only when everything was written.

Example:
    >>> import tempfile, pathlib
    >>> from decoder import CodeSpec
    >>> circuit = CodeSpec(3, 3, 0.01).circuit()
    >>> events = circuit.compile_detector_sampler(seed=1).sample(100, bit_packed=True)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dets.r8"
    >>> with ShotWriter(path, "r8", circuit.num_detectors) as writer:
    ...     writer.write(events)
    >>> chunks = list(read_shots(path, "r8", circuit.num_detectors, chunk_shots=64))
    >>> [len(c) for c in chunks], bool((np.concatenate(chunks) == events).all())
    ([64, 36], True)
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import numpy as np
import stim

from decoder.errors import NqecError
from decoder.evaluation import DecoderStats, decode_and_count
from decoder.events import packed_width, pack_bits, unpack_bits
from decoder.interface import Decoder

FORMATS = ("b8", "01", "r8", "ptb64", "hits", "dets")
CHUNK_SHOTS = 1 << 16  # shots per chunk read, decoded and written (a multiple of 64 for ptb64)
R8_BLOCK = 1 << 20  # bytes read at a time from an r8 file


def check_format(fmt: str) -> str:
    """``fmt`` if Stim knows it, else an NqecError naming the formats."""
    if fmt not in FORMATS:
        raise NqecError(f"unknown shot data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def count_shots(path: str | Path, fmt: str, num_bits: int) -> int | None:
    """Shots in a file of a fixed-size format (b8, 01, ptb64) from its size; None for r8, hits and dets.

    Raises NqecError when the size is not a whole number of records of ``num_bits`` bits.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.b8"
        >>> _ = path.write_bytes(bytes(36))
        >>> count_shots(path, "b8", 24)
        12
        >>> count_shots(path, "b8", 120)
        Traceback (most recent call last):
        ...
        decoder.errors.NqecError: ...x.b8: 36 bytes is not a whole number of b8 records of 120 bits (15 bytes each); is it a file of this circuit's shots?
    """
    check_format(fmt)
    record = {"b8": packed_width(num_bits), "01": num_bits + 1, "ptb64": num_bits * 8}.get(fmt)
    if record is None:
        return None
    size = _size(path)
    if size % record:
        raise NqecError(f"{path}: {size} bytes is not a whole number of {fmt} records of {num_bits} bits "
                        f"({record} bytes each{', 64 shots' if fmt == 'ptb64' else ''}); "
                        "is it a file of this circuit's shots?")
    return size // record * (64 if fmt == "ptb64" else 1)


def read_shots(path: str | Path, fmt: str, num_bits: int, *, observables: bool = False,
               chunk_shots: int = CHUNK_SHOTS) -> Iterator[np.ndarray]:
    """Bit-packed ``uint8 [n, ceil(num_bits / 8)]`` chunks of ``chunk_shots`` shots (the last may be
    shorter) of a shot file; ``observables`` reads ``L`` instead of ``D`` records in the dets format.

    The file's size is checked first for the fixed-size formats; a record Stim cannot parse, or a
    truncated last record, raises NqecError naming the file.
    """
    count_shots(path, fmt, num_bits)
    if fmt == "ptb64" and chunk_shots % 64:
        raise NqecError(f"ptb64 files are read in multiples of 64 shots, got chunks of {chunk_shots}")
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise NqecError(f"cannot read shot file {path}: {exc.strerror}") from None
    with file, tempfile.TemporaryDirectory(prefix="nqec-shots-") as scratch:
        parse = _Parser(Path(scratch) / f"chunk.{fmt}", fmt, num_bits, observables, path)
        if fmt == "b8":
            width = packed_width(num_bits)
            while chunk := file.read(chunk_shots * width):
                yield _clear_padding(np.frombuffer(chunk, dtype=np.uint8).reshape(-1, width), num_bits)
        elif fmt == "ptb64":
            while chunk := file.read(chunk_shots * num_bits // 8):
                yield parse(chunk)
        elif fmt == "r8":
            for records in _r8_records(file, num_bits, chunk_shots, path):
                yield parse(records)
        else:
            while lines := list(itertools.islice(file, chunk_shots)):
                if not lines[-1].endswith(b"\n"):
                    raise NqecError(f"{path}: truncated: its last {fmt} record has no end of line")
                yield parse(b"".join(lines))


def decode_file(decoders: Mapping[str, Decoder], events_path: str | Path, events_format: str, out_path: str | Path,
                out_format: str, *, obs_path: str | Path | None = None, obs_format: str = "b8",
                chunk_shots: int = CHUNK_SHOTS,
                on_progress: Callable[[int], None] | None = None) -> dict[str, DecoderStats]:
    """Decode a file of detection events with the first of ``decoders``; write its observable flips.

    With ``obs_path`` (the true observable flips of the same shots) every decoder decodes every chunk
    and its :class:`DecoderStats` counts logical errors on the same shots; without, only the first
    decoder runs and its record holds shots and seconds (no errors: nothing to compare with).
    ``out_path`` appears only once every shot is decoded and written.

    Example:
        >>> import tempfile, pathlib
        >>> from decoder import CodeSpec, MatchingDecoder
        >>> spec = CodeSpec(3, 3, 0.01)
        >>> events, obs = spec.circuit().compile_detector_sampler(seed=1).sample(500, separate_observables=True)
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> stim.write_shot_data_file(data=events, path=folder / "dets.01", format="01", num_detectors=24)
        >>> stim.write_shot_data_file(data=obs, path=folder / "obs.b8", format="b8", num_observables=1)
        >>> stats = decode_file({"matching": MatchingDecoder.from_spec(spec)}, folder / "dets.01", "01",
        ...                     folder / "predicted.01", "01", obs_path=folder / "obs.b8")
        >>> stats["matching"].shots, stats["matching"].errors > 0
        (500, True)
    """
    check_format(out_format)
    main = next(iter(decoders))
    decoder = decoders[main]
    totals = {label: DecoderStats(label) for label in (decoders if obs_path is not None else [main])}
    chunks = read_shots(events_path, events_format, decoder.num_detectors, chunk_shots=chunk_shots)
    if obs_path is None:
        pairs = ((events, None) for events in chunks)
    else:
        pairs = itertools.zip_longest(chunks, read_shots(obs_path, obs_format, decoder.num_observables,
                                                         observables=True, chunk_shots=chunk_shots))
    with ShotWriter(out_path, out_format, decoder.num_observables, observables=True) as writer:
        for events, truth in pairs:
            if obs_path is None:
                start = time.perf_counter()
                predicted = decoder.decode_batch(events)
                chunk = {main: DecoderStats(main, len(events), 0, time.perf_counter() - start)}
            elif events is None or truth is None or len(events) != len(truth):
                raise NqecError(f"{events_path} and {obs_path} hold different numbers of shots")
            else:
                chunk, predicted = decode_and_count(decoders, events, unpack_bits(truth, decoder.num_observables))
            totals = {label: totals[label] + chunk[label] for label in totals}
            writer.write(predicted)
            if on_progress:
                on_progress(len(events))
    return totals


class ShotWriter:
    """Writes chunks of shots (bool or bit-packed) to ``path`` in ``fmt``, through a temporary file in
    the same directory that replaces ``path`` when the ``with`` block ends without an error (and is
    removed otherwise). ``observables`` writes ``L`` records in the dets format."""

    def __init__(self, path: str | Path, fmt: str, num_bits: int, *, observables: bool = False):
        self.path = Path(path)
        self.fmt = check_format(fmt)
        self.num_bits = num_bits
        self.counts = {"num_observables" if observables else "num_detectors": num_bits}
        self.shots = 0

    def __enter__(self) -> "ShotWriter":
        # the file's mode follows the umask, as a plain open() would (tempfile's are private)
        self._partial = self.path.with_name(f".{self.path.name}.{os.getpid()}-{id(self):x}.partial")
        try:
            self._file = open(self._partial, "xb")
        except OSError as exc:
            raise NqecError(f"cannot write {self.path}: {exc.strerror}") from None
        self._scratch = tempfile.TemporaryDirectory(prefix="nqec-shots-")
        return self

    def write(self, shots: np.ndarray) -> None:
        """Append ``bool [n, num_bits]`` or bit-packed ``uint8 [n, ceil(num_bits / 8)]`` shots."""
        packed = shots if shots.dtype == np.uint8 else pack_bits(shots)
        if packed.ndim != 2 or packed.shape[1] != packed_width(self.num_bits):
            raise NqecError(f"expected shots of {self.num_bits} bits, got an array of shape {shots.shape}")
        if self.fmt == "b8":
            self._file.write(_clear_padding(packed, self.num_bits).tobytes())
        elif len(packed):
            scratch = Path(self._scratch.name) / f"chunk.{self.fmt}"
            try:
                stim.write_shot_data_file(data=packed, path=str(scratch), format=self.fmt, **self.counts)
            except ValueError as exc:
                raise NqecError(f"{self.path}: cannot write {len(packed)} shots as {self.fmt}: {exc}") from None
            self._file.write(scratch.read_bytes())
        self.shots += len(packed)

    def __exit__(self, kind, value, traceback) -> None:
        self._file.close()
        self._scratch.cleanup()
        if kind is None:
            os.replace(self._partial, self.path)
        else:
            os.unlink(self._partial)


class _Parser:
    """Stim's parser on one chunk of records (written to a scratch file, since Stim reads paths)."""

    def __init__(self, scratch: Path, fmt: str, num_bits: int, observables: bool, source: str | Path):
        self.scratch, self.fmt, self.source = scratch, fmt, source
        self.counts = {"num_observables" if observables else "num_detectors": num_bits}

    def __call__(self, records: bytes) -> np.ndarray:
        self.scratch.write_bytes(records)
        try:
            return stim.read_shot_data_file(path=str(self.scratch), format=self.fmt, bit_packed=True, **self.counts)
        except ValueError as exc:
            raise NqecError(f"{self.source}: not a {self.fmt} file of {next(iter(self.counts.values()))}-bit "
                            f"shots: {exc}") from None


def _r8_records(file: BinaryIO, num_bits: int, chunk_shots: int, path: str | Path) -> Iterator[bytes]:
    """Whole r8 records, ``chunk_shots`` at a time (fewer at the end of the file)."""
    data, eof = b"", False
    while True:
        ends = _r8_ends(data, num_bits)
        if len(ends) < chunk_shots and not eof:
            block = file.read(R8_BLOCK)
            eof, data = not block, data + block
            continue
        if not len(ends):
            if data:
                raise NqecError(f"{path}: truncated: its last r8 record stops short of {num_bits} bits")
            return
        cut = ends[min(chunk_shots, len(ends)) - 1]
        yield data[:cut]
        data = data[cut:]


def _r8_ends(data: bytes, num_bits: int) -> np.ndarray:
    """Offsets just past each whole r8 record of ``data``. A byte ``v`` stands for ``v`` zeros and a one
    (255: 255 zeros, no one); a record spans ``num_bits + 1`` positions, its last one implied."""
    values = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    return np.flatnonzero(np.cumsum(np.where(values == 255, 255, values + 1)) % (num_bits + 1) == 0) + 1


def _clear_padding(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """Zero the bits past ``num_bits`` in the last byte of each row (as Stim's reader does)."""
    if num_bits % 8 and len(packed) and (packed[:, -1] >> (num_bits % 8)).any():
        packed = packed.copy()
        packed[:, -1] &= (1 << (num_bits % 8)) - 1
    return packed


def _size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise NqecError(f"cannot read shot file {path}: {exc.strerror}") from None
