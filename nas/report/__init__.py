"""Reports read from a run's storage: the trials table, the Pareto front, and their plots."""
