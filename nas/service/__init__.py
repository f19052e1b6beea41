"""The service: `nas serve`, a JSON API and web UI over `nas.api` that runs searches and
exports as jobs (subprocesses here, or Ray jobs on a cluster) and survives its own restart."""
