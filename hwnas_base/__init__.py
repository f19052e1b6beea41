"""What every package of the project shares, and nothing else: the error hierarchy, atomic file
writes and the progress-callback type.

`search_spaces` and `latency_predictors` stand on this alone, so either can be used without
`nas`; `nas` builds on all three.
"""
