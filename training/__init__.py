"""Training side of nqec: Stim data streams, training loops, evaluation and benchmarks."""
