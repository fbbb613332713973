"""The README's main job: the embedded federation, and its scenario, on real sockets."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from core.ids import Cnic
from shahrah import scenario
from shahrah.cli import main
from shahrah.demo import Live, describe, running
from shahrah.federation import ASSESSMENT, FEDERATION_FILE, LAND_OFFICE, MEMBERS, Ports
from shahrah.scenario import run_scenario
from tests.ports import free_base


async def test_the_scenario_holds_and_runs_again_on_other_ports(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    async with running(data, free_base(), people=20) as live:
        steps = await run_scenario(live)
        assert [s.name for s in steps if not s.ok] == [], [s.detail for s in steps if not s.ok]
        assert len(steps) == 7
        told = describe(live)
        # An assessment is about its owner: asked for under anyone else's name, or under
        # none, it is refused, so the owner's "who looked at my data" is the true one.
        prop = live.federation["samples"]["property_id"]
        someone_else = Cnic(live.federation["citizens"][0]["cnic"])
        assert someone_else != Cnic(live.federation["samples"]["property_owner"])
        path = f"/assessments/{prop}"
        for named in ({"Shahrah-Data-Subject": someone_else.to_user_id()}, {}):
            status, headers, body = await scenario._r1(
                live, "plra", LAND_OFFICE, ASSESSMENT, path, named
            )
            assert (status, headers["X-Road-Error"]) == (500, "Server.ServerProxy.AccessDenied")
            assert "tax_due" not in json.dumps(body)
    federation = json.loads((data / FEDERATION_FILE).read_text())
    assert stat.S_IMODE((data / FEDERATION_FILE).stat().st_mode) == 0o600
    # The regulator's export holds personal data, as the audit CLI's own exports do.
    assert stat.S_IMODE((data / "exports").stat().st_mode) == 0o700
    exports = list((data / "exports").iterdir())
    assert exports
    assert {stat.S_IMODE(x.stat().st_mode) for x in exports} == {0o600}
    assert set(federation["gateways"]) == {m.name for m in MEMBERS}
    assert federation["consents"]["active"].startswith("cns-")
    assert len(federation["citizens"]) == 3
    assert federation["operator_token"].startswith("shr_op_")
    # The first citizen acts for a child, who has a request waiting for the parent's decision.
    (ward,) = federation["wards"]
    assert (ward["guardian"], ward["relation"]) == (federation["citizens"][0]["cnic"], "parent")
    assert ward["cnic"] not in {c["cnic"] for c in federation["citizens"]}
    assert federation["consents"]["ward_pending"].startswith("cns-")
    first = federation["citizens"][0]
    assert f"citizen portal  {federation['consent']['url']}/portal/" in told
    assert f"CNIC {first['cnic']}  password {first['password']}" in told
    regulator = federation["regulator"]
    assert regulator["console"] == f"{federation['audit']['url']}/console/"
    assert regulator["username"] == "regulator"
    assert len(regulator["password"]) >= 12

    moved = free_base()
    async with running(data, moved, people=20) as live:
        assert live.federation["gateways"]["lmc"]["local"] == f"http://127.0.0.1:{moved + 30}"
        described = describe(live)
        assert f"regulator console http://127.0.0.1:{moved + 2}/console/" in described
        assert live.federation["regulator"]["password"] in described
        assert f"operator console http://127.0.0.1:{moved}/console/" in described
        assert live.federation["operator_token"] in described
        steps = await run_scenario(live)
        assert all(s.ok for s in steps), [s.detail for s in steps if not s.ok]


def test_a_half_made_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stray.txt").write_text("x")
    result = CliRunner().invoke(
        main, ["demo", "--data-dir", str(tmp_path), "--base-port", "30000", "--scenario"]
    )
    assert result.exit_code != 0
    assert "stopped half-way" in result.stderr


def _demo_error(data_dir: Path, base: int) -> str:
    result = CliRunner().invoke(
        main, ["demo", "--data-dir", str(data_dir), "--base-port", str(base), "--scenario"]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    return line


def test_a_data_dir_inside_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = _demo_error(tmp_path / "file" / "demo", free_base())
    assert str(tmp_path / "file" / "demo") in line


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"base_port": 84', "is damaged"),
        (b"\xff\xfe", "is damaged"),
        (b"[]", "is not a federation description"),
        (b'{"base_port": "8400"}', "is not a federation description"),
    ],
)
def test_a_damaged_federation_file_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / FEDERATION_FILE).write_bytes(content)
    line = _demo_error(tmp_path, free_base())
    assert f"{tmp_path / FEDERATION_FILE} {says}" in line
    assert f"remove {tmp_path}" in line


def test_a_port_range_in_use_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    base = free_base()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 21))  # PLRA's gateway's mTLS port
        taken.listen()
        line = _demo_error(tmp_path / "demo", base)
    assert f"127.0.0.1:{base + 21}" in line
    assert "--base-port" in line
    assert not (tmp_path / "demo").exists()


async def test_a_step_that_breaks_unexpectedly_is_reported_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--scenario must say which step failed however it failed, and still run the others."""

    async def disconnected(*args: object, **kwargs: object) -> str:
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(scenario, "request_consent", disconnected)
    nowhere = "http://127.0.0.1:1"
    federation = {
        "citizens": [{"cnic": "35202-1234567-1", "name": "A", "password": "p"}],
        "gateways": {name: {"local": nowhere} for name in ("nadra", "plra", "lmc")},
        "samples": {"parcel_id": "1", "property_id": "1"},
    }
    async with aiohttp.ClientSession() as http:
        live = Live(tmp_path, Ports(free_base()), federation, {}, http, "sqlite://")
        steps = await scenario.run_scenario(live)
    assert len(steps) == 7
    assert not steps[0].ok
    assert "ServerDisconnectedError" in steps[0].detail or "disconnected" in steps[0].detail


def test_ctrl_c_stops_the_federation_cleanly(tmp_path: Path) -> None:
    """As an operator runs it: `shahrah demo` in its own process, serving until Ctrl-C, then
    exiting 0 with every port released and no traceback."""
    base = free_base()
    demo = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [
            sys.executable,
            "-m",
            "shahrah",
            "demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--base-port",
            str(base),
            "--people",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()  # printed once everything is up
        assert "is running (Ctrl-C stops it)" in first, first
        with socket.create_connection(("127.0.0.1", base), timeout=5):
            pass  # the registry answers
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, err
    assert "Traceback" not in err
    assert "stopping" in err
    for port in (base, base + 1, base + 2):
        with socket.socket() as s:
            # As the servers bind (connections just closed may linger in TIME_WAIT).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # nothing listens there any more
            s.listen()
