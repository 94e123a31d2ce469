from collections import Counter

import numpy as np
import pytest

from decoder.spec import CodeSpec
from training.syndrome_table import CHUNK, SyndromeTable

SPECS = [CodeSpec(3, 3, 0.003), CodeSpec(3, 3, 0.01)]


def raw_samples(shots: int, seed: int):
    """The same samples SyndromeTable.sample draws: shots split over SPECS, seed + index each."""
    for index, spec in enumerate(SPECS):
        sampler = spec.circuit().compile_detector_sampler(seed=seed + index)
        count = shots // len(SPECS) + (index < shots % len(SPECS))
        assert count <= CHUNK
        yield sampler.sample(count, separate_observables=True, bit_packed=True)


def test_table_counts_every_syndrome_and_its_flips_exactly():
    table = SyndromeTable.sample(SPECS, 40_001, seed=5)
    counts, flips = Counter(), Counter()
    for events, observables in raw_samples(40_001, seed=5):
        for row, flip in zip(events, observables[:, 0]):
            counts[row.tobytes()] += 1
            flips[row.tobytes()] += int(flip)
    assert table.shots == 40_001 and len(table.counts) == len(counts)
    for row, count, flip in zip(table.events, table.counts, table.flips[:, 0]):
        assert (count, flip) == (counts[row.tobytes()], flips[row.tobytes()])


def test_merging_tables_adds_counts():
    table = SyndromeTable.sample(SPECS, 10_000, seed=1)
    doubled = table.merged(table.events, table.counts, table.flips)
    assert np.array_equal(doubled.events, table.events)
    assert np.array_equal(doubled.counts, 2 * table.counts) and np.array_equal(doubled.flips, 2 * table.flips)


@pytest.mark.parametrize("tempering", [0.0, 0.5, 1.0])
def test_weighted_draws_reproduce_the_sample_average(tempering):
    """E[weight * g(syndrome)] over draws = the mean of g over the raw samples, for any tempering.
    g = 'the syndrome is quiet' and g = 'flip rate'; 4e5 draws, tolerance 5 standard errors."""
    table = SyndromeTable.sample(SPECS, 200_000, seed=2)
    quiet_row = ~table.events.any(axis=1)
    data_quiet = table.counts[quiet_row].sum() / table.shots
    data_flip = table.flips.sum() / table.shots
    stream = table.stream(batch_size=100_000, seed=3, tempering=tempering)
    quiet, flip = [], []
    for _ in range(4):
        events, rate, weight = next(stream)
        quiet.append(weight * ~events.any(axis=1))
        flip.append(weight * rate[:, 0])
    for values, expected in ((np.concatenate(quiet), data_quiet), (np.concatenate(flip), data_flip)):
        assert abs(values.mean() - expected) < 5 * values.std() / np.sqrt(len(values)) + 1e-9


def test_tempering_outside_unit_interval_is_rejected():
    table = SyndromeTable.sample(SPECS[:1], 1000, seed=0)
    with pytest.raises(ValueError, match="tempering"):
        next(table.stream(8, 0, tempering=1.5))
