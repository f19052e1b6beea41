"""Export and after: runtime formats, the export of a trial with its model card and parity
checks, per-layer profiles of an exported model, and the offline A/B comparison of exports."""
