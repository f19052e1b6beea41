"""A job's own process: ``python -m nas.service.runner JOB_FOLDER``.

It reads ``job.json``, runs the search or the export through `nas.api` exactly as the CLI
would, and writes ``outcome.json`` (``ok`` and a one-line ``message``) as it ends, so the
service learns how the job ended even if it was restarted in the meantime and is no longer the
process's parent. Ctrl-C (SIGINT, which is how the service cancels) stops a search cleanly:
the trial in progress is marked interrupted and is run again on resume.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from hwnas_base.io import write_atomic
from nas import api
from nas.errors import NASError

OUTCOME = "outcome.json"
SPEC = "job.json"


def run(spec: dict[str, Any], folder: Path) -> str:
    """Run the job `spec` describes; a one-line summary of what it did."""
    if spec["kind"] == "search":
        options = api.SearchOptions(
            config=folder / "config.yaml",
            runs_dir=Path(spec["runs_dir"]),
            n_trials=spec.get("n_trials"),
            timeout=spec.get("timeout"),
            backend="ray" if spec.get("address") else "local",
            address=spec.get("address"),
        )
        result = api.search(options)
        stop = " (stopped by its timeout)" if result.stopped_by_timeout else ""
        return (
            f"{result.finished}/{result.target} trials finished{stop}; front of {len(result.front)}"
        )
    export = api.ExportOptions(
        out=folder / "export",
        trial=int(spec["trial"]),
        format=spec.get("format"),
        precision=spec.get("precision"),
        weights=spec.get("weights", "auto"),
        min_agreement=float(spec.get("min_agreement", 0.98)),
        force=True,
    )
    path = api.export(Path(spec["runs_dir"]) / spec["run"], export)
    return f"exported trial {spec['trial']} to {path.name}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nas.service.runner JOB_FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    # SIGINT is how the service cancels a job; a service started where SIGINT is ignored (in
    # the background of a script, say) must not pass that on, or no job could be cancelled.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
    code = 0
    try:
        outcome: dict[str, Any] = {"ok": True, "message": run(spec, folder)}
    except KeyboardInterrupt:
        outcome, code = {"ok": False, "message": "stopped by the user"}, 130
    except NASError as e:
        outcome, code = {"ok": False, "message": str(e)}, 2
    except Exception as e:  # the job's record must say why it ended, whatever happened
        outcome, code = {"ok": False, "message": f"{type(e).__name__}: {e}"}, 1
    write_atomic(folder / OUTCOME, json.dumps(outcome) + "\n")
    print(outcome["message"], file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
