"""Searches on a Ray cluster: connection checks, meter actors on the device's nodes, the
worker-side trial, the Optuna-search adapter and the driver. Needs Ray (the ``cluster`` extra);
`nas.api` imports it only for ``--backend ray``."""
