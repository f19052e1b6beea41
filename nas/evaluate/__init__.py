"""Evaluation: the one function that scores a candidate (train, compress, measure), and the
latency source a run config describes."""
