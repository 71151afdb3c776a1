"""A stand-in service for the embedded-stack tests: stdlib only, answers ``/healthz``.

Started by the stack as ``python -m healthz_server`` exactly like a real service, it reads the
same ``TUNEWIRE_HTTP__*`` settings, so the tests check the stack's process handling without
depending on any real service being finished. Switches (environment variables):

- ``HEALTHZ_EXIT=<code>``: write a reason to stderr and exit at once (a service that cannot start).
- ``HEALTHZ_SPAWN_CHILD=1``: start a long ``sleep`` child first (as the local launcher starts a
  trainer), to check that stopping the service stops its children too.

``GET /env`` returns the process's ``TUNEWIRE_*`` and ``AWS_*`` variables and the child's pid.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys


def main() -> None:
    """Serve until killed."""
    code = os.environ.get("HEALTHZ_EXIT")
    if code is not None:
        sys.stderr.write(f"healthz_server: refusing to start as asked (exit {code})\n")
        sys.exit(int(code))
    child_pid = None
    if os.environ.get("HEALTHZ_SPAWN_CHILD") == "1":
        child_pid = subprocess.Popen(["sleep", "300"]).pid

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply({"status": "ok"})
            elif self.path == "/env":
                prefixes = ("TUNEWIRE_", "AWS_")
                env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
                self._reply({"env": env, "child_pid": child_pid, "pid": os.getpid()})
            else:
                self.send_error(404)

        def _reply(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(format % args + "\n")

    host = os.environ["TUNEWIRE_HTTP__HOST"]
    port = int(os.environ["TUNEWIRE_HTTP__PORT"])
    with http.server.ThreadingHTTPServer((host, port), Handler) as server:
        sys.stderr.write(f"healthz_server: listening on {host}:{port}\n")
        server.serve_forever()


if __name__ == "__main__":
    main()
