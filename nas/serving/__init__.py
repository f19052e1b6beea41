"""Serving exported variants: `nas deploy` on Ray Serve with dynamic batching, A/B traffic, a
canary ramp with guardrails, an exposure log and Prometheus metrics.

The decisions (assignment, the ramp, the guardrails, the statistics) are plain functions in
`assignment`, `ramp` and `stats`; `app`, `ingress` and `replica` are the Ray Serve edge that
calls them.
"""
