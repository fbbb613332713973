"""Free loopback ports for tests that start a whole federation."""

from __future__ import annotations

import random
import socket


def free_base(span: int = 40) -> int:
    """A base port whose next ``span`` ports are free now (the federation uses P..P+31)."""
    for _ in range(50):
        # Below Linux's ephemeral range (32768-60999), which the kernel hands out to every
        # socket bound to port 0 and every outgoing connection, the suite's other workers'
        # included: a range found free here stays free until the federation binds it.
        base = random.randrange(10000, 32000, 100)
        sockets = []
        try:
            for port in range(base, base + span):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")
