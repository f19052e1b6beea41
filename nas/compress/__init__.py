"""Compression: the compression dimensions of a search, structured pruning, int8 quantization,
and scoring the compressed artifact on the target runtime."""
