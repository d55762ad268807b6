"""The CPU cost of one read of one frame from a pseudo-terminal, as the pen process
reads at 1 kHz: SerialTransport's read through the port's descriptor against
pyserial's own read (in_waiting, read(1), read(rest)), in the same run.
Run: `.venv/bin/python bench/serial_read.py [READS]`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

from devicectl.link import PtyTransport, SerialTransport, open_pty, open_transport

FRAME = bytes(range(1, 34)) + b"\x00"  # the size of a TELEMETRY frame on the wire


def cost_us(host: SerialTransport, pen: PtyTransport, reads: int) -> float:
    """CPU µs per write-then-read of one frame (the write is the pen's, the same for both)."""
    c0 = time.process_time()
    for _ in range(reads):
        pen.write(FRAME)
        got = host.read(4096, 0.001)
        while len(got) < len(FRAME):
            got += host.read(4096, 0.001)
    return (time.process_time() - c0) / reads * 1e6


def main() -> int:
    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport)
        fd = host._fd
        print(f"one {len(FRAME)}-byte frame written then read over a pty, {reads} times "
              f"(Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f})")
        for r in range(3):
            host._fd = fd
            direct = cost_us(host, pen, reads)
            host._fd = None
            pyserial = cost_us(host, pen, reads)
            print(f"  round {r + 1}: descriptor {direct:.1f} µs CPU, pyserial {pyserial:.1f} µs "
                  f"CPU: {direct / pyserial:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
