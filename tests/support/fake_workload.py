"""A stand-in workload for the launcher tests: sleeps, prints, exits as told.

Run as ``python -m tests.support.fake_workload [--print-env NAME ...] [--spawn] [--sleep S]
[--ignore-term] [--exit CODE]``; a launcher test passes it through ``WorkloadSpec(module=...)``
so that it needs neither torch nor S3.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

MODULE = "tests.support.fake_workload"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep first")
    parser.add_argument("--exit", type=int, default=0, help="exit status")
    parser.add_argument("--print-env", nargs="*", default=[], help="print NAME=value lines")
    parser.add_argument("--ignore-term", action="store_true", help="survive SIGTERM")
    parser.add_argument(
        "--spawn", action="store_true", help="start a long-lived child and print its pid"
    )
    args = parser.parse_args(argv)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.write(f"fake workload pid {os.getpid()} running\n")
    for name in args.print_env:
        sys.stdout.write(f"{name}={os.environ.get(name, '<unset>')}\n")
    if args.spawn:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        sys.stdout.write(f"child pid {child.pid}\n")
    sys.stdout.flush()
    time.sleep(args.sleep)
    if args.exit:
        sys.stdout.write(f"fake workload failing on purpose with status {args.exit}\n")
    return int(args.exit)


if __name__ == "__main__":
    sys.exit(main())
