"""Training: the proxy data, the short proxy recipe every candidate gets, distillation, full
training of a chosen trial, and how a trial's weights (and its pruned shape) are stored."""
