"""The live page's clients for bench/views_load.py: a process of its own, as browsers would be.

N connections to /api/stream that read everything, or (--stalled) that never read,
with a tiny receive window so that the server's sends back up at once. Prints
CONNECTED once all are connected. Run by views_load's host: `python
bench/sse_clients.py PORT N [--stalled]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--stalled", action="store_true")
    args = ap.parse_args()
    # Browsers, which the host does not place: every core (it inherited the host's).
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    socks = []
    request = (f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    for _ in range(args.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if args.stalled:  # a tiny window, set before connecting
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", args.port))
        s.sendall(request)
        socks.append(s)
    print("CONNECTED", flush=True)
    while True:
        if args.stalled:
            time.sleep(1.0)
            continue
        ready, _, _ = select.select(socks, [], [], 1.0)
        for s in ready:
            if not s.recv(65536):
                socks.remove(s)


if __name__ == "__main__":
    sys.exit(main())
