"""Devices from a run config's point of view: profile a device into a latency table, measure
how well a predictor does on held-out candidates, list the devices and their predictors."""
