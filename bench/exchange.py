"""The full exchange pipeline under load, against a plain two-hop aiohttp proxy chain.

Every component runs in a process of its own, as a deployment would: each
gateway of the embedded federation (on SQLite), the registry, the consent
service, the audit witness, the JSON backend, and each hop of the baseline,
a plain aiohttp proxy chain (proxy -> proxy -> backend, no TLS, no
signatures, no checks) to the same backend. So both paths cross three
processes, and neither gets a core the other lacks. This process is the load
generator. Rounds alternate between the two paths, so load from elsewhere on
the machine hits both alike; each round also reads the CPU time every
process of its path used, per request.

The Shahrah path is the real one: r1 at the Lahore corporation's gateway,
signed envelope over pinned mutual TLS to NADRA's gateway, replay check,
access right, backend call, response validated against ``pk.nadra.person``,
signed answer, audit appends on both sides (durable, group-committed).

With ``--tls-baseline`` a third path runs beside them: the same proxy chain
with mutual TLS on its middle hop (certificates made for the run), as between
two gateways. It tells how much of the gap is the transport and how much the
pipeline's own work.

    python -m bench.exchange [--requests N] [--concurrency C] [--rounds R] [--peak 1000]
                             [--tls-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

SERVICE = "PK/FED/NADRA/civil-registry/bench/v1"
CLIENT = "PK/LG/LMC/property-tax"
PERSON = json.loads(
    (Path(__file__).resolve().parents[1] / "schemas/records/pk.nadra.person.json").read_text()
)["examples"][0]


# --- the server process ------------------------------------------------------------------------


def _backend() -> web.Application:
    async def person(request: web.Request) -> web.Response:
        return web.json_response(dict(PERSON, cnic=request.match_info["cnic"]))

    app = web.Application()
    app.router.add_get("/persons/{cnic}", person)
    return app


def _proxy(target: str, session: aiohttp.ClientSession) -> web.Application:
    """One hop of the baseline: forward method, path, headers and body; return the answer."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with session.request(
            request.method,
            target + request.path_qs,
            headers={"Accept": "application/json"},
            data=body or None,
        ) as r:
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def _tls_files(data_dir: Path) -> dict[str, Path]:
    """Where the TLS baseline's two hops keep their key and certificate."""
    return {
        f"{hop}.{kind}": data_dir / f"tls-{hop}.{kind}"
        for hop in ("first", "second")
        for kind in ("key", "crt")
    }


def _make_tls_files(data_dir: Path) -> None:
    """A fresh self-signed P-256 certificate for each TLS hop, as gateways have."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from core.tls import make_certificate

    files = _tls_files(data_dir)
    for hop in ("first", "second"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{hop}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert = make_certificate(f"bench-{hop}", key)
        files[f"{hop}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))


async def _serve(role: str, data_dir: Path, base: int) -> None:
    """Run one component until SIGTERM: ``backend``, a baseline hop (``proxy1``, ``proxy2``,
    ``tls-proxy1``, ``tls-proxy2``) or one of the federation's components
    (shahrah.demo.COMPONENTS)."""
    from core.tls import client_context, server_context
    from core.web import listening
    from shahrah.demo import serving
    from shahrah.federation import Ports

    backend, proxy1, proxy2, tls1, tls2 = (base + n for n in range(50, 55))
    tls = _tls_files(data_dir)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        )
        if role == "backend":
            await stack.enter_async_context(listening(_backend(), "127.0.0.1", backend))
        elif role == "proxy2":
            app = _proxy(f"http://127.0.0.1:{backend}", session)
            await stack.enter_async_context(listening(app, "127.0.0.1", proxy2))
        elif role == "proxy1":
            app = _proxy(f"http://127.0.0.1:{proxy2}", session)
            await stack.enter_async_context(listening(app, "127.0.0.1", proxy1))
        elif role == "tls-proxy2":  # accepts only the first hop's certificate, as a gateway
            ctx = server_context(
                str(tls["second.crt"]), str(tls["second.key"]), [tls["first.crt"].read_text()]
            )
            app = _proxy(f"http://127.0.0.1:{backend}", session)
            await stack.enter_async_context(listening(app, "127.0.0.1", tls2, ctx))
        elif role == "tls-proxy1":  # presents its certificate, pins the second hop's
            ctx = client_context(
                str(tls["first.crt"]), str(tls["first.key"]), tls["second.crt"].read_text()
            )
            pinned = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, ssl=ctx))
            )
            app = _proxy(f"https://127.0.0.1:{tls2}", pinned)
            await stack.enter_async_context(listening(app, "127.0.0.1", tls1))
        else:
            await stack.enter_async_context(serving(role, data_dir, Ports(base), session))
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


async def _prepare(data_dir: Path, base: int) -> None:
    """The demo federation plus a service without consent on a plain JSON backend."""
    from core.db import create_engine, sessions, transaction
    from core.ids import ServiceId
    from registry import service as ops
    from registry.globalconf import SchemaRef
    from registry.payloads import AccessRightCreate, ServiceCreate
    from shahrah.federation import Ports, create

    await create(data_dir, Ports(base), people=20)
    engine = create_engine(f"sqlite:///{data_dir / 'registry' / 'registry.db'}")
    try:
        async with transaction(sessions(engine)) as s:
            sid = ServiceId.parse(SERVICE)
            await ops.add_service(
                s,
                ServiceCreate(
                    id=sid,
                    title="Benchmark: person records without consent",
                    response_schema=SchemaRef(subject="pk.nadra.person", version=1),
                ),
            )
            await ops.grant(
                s, AccessRightCreate(service=sid, client=CLIENT, method="GET", path="/persons/*")
            )
    finally:
        await engine.dispose()
    config = data_dir / "gateways" / "nadra" / "gateway.toml"
    text = config.read_text()
    text = text.replace(
        "\n[local]", f'\n[services."{SERVICE}"]\nurl = "http://127.0.0.1:{base + 50}"\n\n[local]', 1
    )
    config.write_text(text)


# --- the load generator --------------------------------------------------------------------------


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, this round

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


async def _load(url: str, headers: dict[str, str], requests: int, concurrency: int) -> Round:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    latencies: list[float] = []
    errors = 0
    queue = iter(range(requests))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for i in queue:
                cnic = f"35202-{1000000 + i % 9000000:07d}-{i % 10}"
                started = time.perf_counter()
                try:
                    async with session.get(f"{url}/persons/{cnic}", headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Round(time.perf_counter() - started, latencies, errors)


async def _open_loop(
    url: str, headers: dict[str, str], connections: int, rate: float, seconds: float
) -> Round:
    """``connections`` clients, each with its own connection, together offering ``rate``
    requests per second at evenly spread times: latency under many open connections at a
    load the system can carry (a closed loop would only measure queueing)."""
    latencies: list[float] = []
    errors = 0
    period = connections / rate  # seconds between one client's requests
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(connections)
    ]
    try:

        async def client(k: int, session: aiohttp.ClientSession) -> None:
            nonlocal errors
            await asyncio.sleep(k * period / connections)  # spread the clients' phases
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline:
                next_at = time.perf_counter() + period
                cnic = f"35202-{1000000 + (k * 7919 + i) % 9000000:07d}-{i % 10}"
                started = time.perf_counter()
                try:
                    async with session.get(f"{url}/persons/{cnic}", headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            latencies.append(time.perf_counter() - started)
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                i += 1
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        started = time.perf_counter()
        await asyncio.gather(*(client(k, s) for k, s in enumerate(sessions)))
        return Round(time.perf_counter() - started, latencies, errors)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


class _Processes:
    """The component processes, started in order (each once it answers ``ready``), stopped
    in reverse."""

    def __init__(self, data_dir: Path, base: int) -> None:
        self.data_dir, self.base = data_dir, base
        self.running: dict[str, subprocess.Popen[str]] = {}

    def start(self, role: str) -> None:
        process = subprocess.Popen(  # noqa: S603 (this very module, with our own arguments)
            [
                sys.executable,
                "-m",
                "bench.exchange",
                "--serve",
                role,
                "--data-dir",
                str(self.data_dir),
                "--base-port",
                str(self.base),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.running[role] = process
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"{role} did not start")

    def cpu(self, roles: tuple[str, ...]) -> dict[str, float]:
        """CPU seconds (user and system) each process of ``roles`` has used so far."""
        used = {}
        for role in roles:
            with open(f"/proc/{self.running[role].pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime and stime, fields 14 and 15 of proc(5), in clock ticks
            used[role] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return used

    def stop(self) -> None:
        for process in reversed(self.running.values()):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


async def _measure(
    endpoints: dict[str, str], processes: _Processes, args: argparse.Namespace
) -> None:
    from shahrah.demo import COMPONENTS

    paths = {
        "shahrah": (
            f"{endpoints['shahrah']}/r1/{SERVICE}",
            {"X-Road-Client": CLIENT},
            (*COMPONENTS, "backend"),  # the central services' background work counts too
        ),
        "baseline": (endpoints["baseline"], {}, ("proxy1", "proxy2", "backend")),
    }
    if "baseline-tls" in endpoints:
        paths["baseline-tls"] = (
            endpoints["baseline-tls"],
            {},
            ("tls-proxy1", "tls-proxy2", "backend"),
        )
    for url, headers, _ in paths.values():  # warm-up: caches, connections, validators
        await _load(url, headers, 200, 20)
    rounds: dict[str, list[Round]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, (url, headers, roles) in paths.items():
            before = processes.cpu(roles)
            done = await _load(url, headers, args.requests, args.concurrency)
            done.cpu = {r: t - before[r] for r, t in processes.cpu(roles).items()}
            rounds[name].append(done)
    print(
        f"{args.rounds} rounds of {args.requests} requests, {args.concurrency} concurrent, "
        f"{os.cpu_count()} CPUs, every component in its own process"
    )
    print(f"{'path':<46}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/req':>11}{'errors':>7}")
    summary = {}
    for name, label in (
        ("shahrah", "Shahrah full pipeline (2 gateways, mTLS)"),
        ("baseline", "plain aiohttp two-hop proxy chain"),
        ("baseline-tls", "the same chain, mTLS on its middle hop"),
    ):
        if name not in rounds:
            continue
        rate = statistics.median(r.rate for r in rounds[name])
        lat = [x for r in rounds[name] for x in r.latencies]
        errors = sum(r.errors for r in rounds[name])
        per_role = {
            role: 1000 * sum(r.cpu[role] for r in rounds[name]) / max(1, len(lat))
            for role in rounds[name][0].cpu
        }
        summary[name] = rate
        p50, p99 = 1000 * _pct(lat, 0.5), 1000 * _pct(lat, 0.99)
        cpu = sum(per_role.values())
        print(f"{label:<46}{rate:>8,.0f}{p50:>8.1f}{p99:>8.1f}{cpu:>11.2f}{errors:>7}")
        print(
            "    CPU ms/req by process: " + ", ".join(f"{r} {t:.2f}" for r, t in per_role.items())
        )
    ratios = [s.rate / b.rate for s, b in zip(rounds["shahrah"], rounds["baseline"], strict=True)]
    print(
        f"throughput ratio Shahrah / baseline: {summary['shahrah'] / summary['baseline']:.2f} "
        f"(rounds {min(ratios):.2f} to {max(ratios):.2f}; target >= 0.5)"
    )
    if "baseline-tls" in summary:
        ratios = [
            s.rate / b.rate for s, b in zip(rounds["shahrah"], rounds["baseline-tls"], strict=True)
        ]
        print(
            "throughput ratio Shahrah / chain with mTLS: "
            f"{summary['shahrah'] / summary['baseline-tls']:.2f} "
            f"(rounds {min(ratios):.2f} to {max(ratios):.2f})"
        )
    if args.peak:
        url, headers, _ = paths["shahrah"]
        rate = summary["shahrah"] / 2
        steady = await _open_loop(url, headers, args.peak, rate, seconds=20)
        print(
            f"{args.peak} open connections offering {rate:,.0f} req/s (half capacity): "
            f"p50 {1000 * _pct(steady.latencies, 0.5):.0f} ms, "
            f"p99 {1000 * _pct(steady.latencies, 0.99):.0f} ms (target p99 < 1000 ms), "
            f"errors {steady.errors}"
        )
        peak = await _load(url, headers, args.peak * 2, args.peak)
        print(
            "saturated, every client sending back to back: "
            + f"{args.peak} clients: {peak.rate:,.0f} req/s, "
            f"p50 {1000 * _pct(peak.latencies, 0.5):.0f} ms, "
            f"p99 {1000 * _pct(peak.latencies, 0.99):.0f} ms (target p99 < 1000 ms), "
            f"errors {peak.errors}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per round and path")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--peak", type=int, default=1000, help="connections for the p99 check (0: skip)"
    )
    parser.add_argument(
        "--tls-baseline",
        action="store_true",
        help="also measure the proxy chain with mutual TLS on its middle hop",
    )
    parser.add_argument("--base-port", type=int, default=28400)
    # A component process's own flags.
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.data_dir, args.base_port))
        return
    from shahrah.demo import COMPONENTS

    with tempfile.TemporaryDirectory(prefix="shahrah-bench-") as tmp:
        data = Path(tmp) / "federation"
        asyncio.run(_prepare(data, args.base_port))
        roles: tuple[str, ...] = ("backend", "proxy2", "proxy1", *COMPONENTS)
        endpoints = {
            "baseline": f"http://127.0.0.1:{args.base_port + 51}",
            "shahrah": f"http://127.0.0.1:{args.base_port + 30}",
        }
        if args.tls_baseline:
            _make_tls_files(data)
            roles += ("tls-proxy2", "tls-proxy1")
            endpoints["baseline-tls"] = f"http://127.0.0.1:{args.base_port + 53}"
        processes = _Processes(data, args.base_port)
        try:
            for role in roles:
                processes.start(role)
            asyncio.run(_measure(endpoints, processes, args))
        finally:
            processes.stop()


if __name__ == "__main__":
    main()
