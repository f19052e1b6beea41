"""Run inside the Ray cluster's network namespace (see test_ray_jobs.py): a `nas serve` that
submits searches as Ray jobs, one search submitted and followed to its end; prints a JSON
summary as its last line.

    python -m tests.nas.service.in_cluster JOBS_ADDRESS RUNS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.nas.service.conftest import follow_events, search_config, start_service


def main(jobs_address: str, runs: Path) -> None:
    service = start_service(runs, "--address", jobs_address)
    try:
        with service.client() as client:
            created = client.post("/api/searches", json={"config": search_config("onray")})
            assert created.status_code == 201, created.text
            events = follow_events(client, "onray", timeout=900)
            final = client.get("/api/searches/onray").json()
    finally:
        service.stop()
    print(json.dumps({"state": final["state"], "message": final["message"], "events": len(events)}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
