"""`nas serve`: the service under uvicorn, with its URL and token printed."""

from __future__ import annotations

import socket
import sys

from nas.errors import RunError
from nas.service.state import ServeOptions


def serve(options: ServeOptions) -> None:
    """Run the service until it is stopped (Ctrl-C or a signal).

    Raises:
        RunError: bad options, or the port is taken.
    """
    import uvicorn

    from nas.service.app import create_app

    if not 1 <= options.port <= 65535:
        raise RunError(f"--port {options.port}: a port is 1..65535")
    if options.max_running < 1:
        raise RunError(f"--max-running {options.max_running}: at least 1")
    try:
        with socket.create_server((options.host, options.port)):
            pass
    except OSError as e:
        raise RunError(
            f"cannot listen on {options.host}:{options.port}: {e.strerror or e}; pick another "
            "--port or stop what uses it"
        ) from None
    app = create_app(options)
    token = app.state.service.token
    url = f"http://{options.host}:{options.port}/"
    print(
        f"nas serve: {url}\ntoken: {token}  (also in {app.state.service.runs_dir}/.service/token)"
    )
    if not options.loopback:
        print(
            f"warning: listening on {options.host}, beyond this machine, over plain HTTP; put a "
            "TLS-terminating proxy in front before anyone else uses it",
            file=sys.stderr,
        )
    sys.stdout.flush()
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", lifespan="on")
