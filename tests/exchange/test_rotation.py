"""Moving gateways to new member signing keys without a restart or a refused exchange: the new
key registered beside the current one, used once every peer accepts it, and the old one
revoked. Real sockets, real mutual TLS, the real consent service."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import re
from pathlib import Path

import pytest

from audit.note import verify_log_signature
from core.db import transaction, utcnow
from core.errors import ConflictError, InvalidSignatureError
from core.ids import MemberId
from core.keys import KeyFileError, PrivateKey, PublicKey
from exchange import envelope as env_
from exchange.renewal import Renewal, renewed
from exchange.rotation import KeyRotation, jwk_of, rotate
from exchange.server import run_background
from registry import service as ops
from registry.globalconf import CLOCK_SKEW
from registry.payloads import KeyCreate
from tests.exchange.harness import LMC, NADRA, Federation, Node
from tests.exchange.test_consent import CITIZEN, PERSON_PATH, _consent, _headers
from tests.exchange.test_refusals import _envelope, _raw

ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"


class _Now:
    def __init__(self) -> None:
        self.value = utcnow()

    def __call__(self) -> dt.datetime:
        return self.value


def _rotation(fed: Federation, tmp: Path, name: str, member: MemberId, now: _Now) -> KeyRotation:
    """``name``'s gateway's key rotation, its current key in ``tmp/name/signing-key.pem``."""
    folder = tmp / name
    folder.mkdir()
    key_file = folder / "signing-key.pem"
    node = fed.nodes[name]
    node.gateway.key.save(key_file, None)
    return KeyRotation(
        member, key_file, node.gateway.key, passphrase=None, use=node.gateway.use_key, clock=now
    )


async def _register(fed: Federation, member: MemberId, jwk: Path) -> None:
    key = json.loads(await asyncio.to_thread(jwk.read_text))
    async with transaction(fed.registry_db) as s:
        await ops.add_key(s, KeyCreate(member=member, jwk=key))
    await fed.refresh()


async def _revoke(fed: Federation, kid: str) -> None:
    async with transaction(fed.registry_db) as s:
        await ops.revoke_key(s, kid)
    await fed.refresh()


async def _checkpoint_signed_by(node: Node, key: PrivateKey) -> bool:
    """Whether the checkpoint ``node``'s audit log signs now verifies with ``key``."""
    note = await node.audit.checkpoint()
    assert note is not None
    try:
        verify_log_signature(note, node.audit.origin, [key.public()])
    except InvalidSignatureError:
        return False
    return True


async def test_a_gateway_moves_to_its_new_signing_key_without_a_refused_exchange(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    old = lmc.gateway.key
    now = _Now()
    rotation = _rotation(fed, tmp_path, "lmc", LMC, now)
    jwk = rotate(rotation.key_file, passphrase=None)
    assert jwk == renewed(jwk_of(rotation.key_file))
    new_kid = PublicKey.from_jwk(json.loads(jwk.read_text())).kid

    # Not registered yet: the gateway keeps signing with its current key.
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    await _register(fed, LMC, jwk)
    first = lmc.gateway.globalconf.current()
    # Registered, but a peer may still hold a valid configuration that does not list it.
    assert rotation.sync(first) is False
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/a")).status == 200
    now.value = first.conf.expires_at + CLOCK_SKEW
    assert rotation.sync(first) is False
    now.value = first.conf.expires_at + 2 * CLOCK_SKEW
    assert rotation.sync(first) is True

    assert lmc.gateway.key.kid == new_kid == rotation.current.kid
    assert PrivateKey.load(rotation.key_file, None).kid == new_kid
    assert PublicKey.from_jwk(json.loads(jwk_of(rotation.key_file).read_text())).kid == new_kid
    assert not renewed(rotation.key_file).exists()
    assert not jwk.exists()
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/b")
    assert resp.status == 200, await resp.text()
    assert await _checkpoint_signed_by(lmc, lmc.gateway.key)

    # The operator revokes the old key: what it signs is refused, the gateway goes on.
    await _revoke(fed, old.kid)
    refused = await _raw(fed, env_.seal(_envelope(fed), old))
    assert refused.headers["X-Road-Error"] == "Server.ServerProxy.InvalidSignature"
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/c")
    assert resp.status == 200, await resp.text()
    assert rotation.sync(lmc.gateway.globalconf.current()) is False  # nothing left to move


async def test_both_sides_sign_everything_with_their_new_keys(
    fed: Federation, tmp_path: Path
) -> None:
    """Each gateway's old key revoked before it moved: the configuration refuses the old
    key at once, so the gateway moves without waiting; then a consented exchange needs every
    signer on both sides to use the new keys: LMC's pseudonym question and envelope, NADRA's
    consent question and answer, and both audit logs' checkpoints."""
    consent_id = await _consent(fed)  # LMC's tax system asks for it under LMC's old key
    now = _Now()
    for name, member in (("lmc", LMC), ("nadra", NADRA)):
        node = fed.nodes[name]
        rotation = _rotation(fed, tmp_path, name, member, now)
        old = node.gateway.key
        await _register(fed, member, rotate(rotation.key_file, passphrase=None))
        await _revoke(fed, old.kid)
        now.value = utcnow()  # the new key is valid from its registration
        assert rotation.sync(node.gateway.globalconf.current()) is True
        assert node.gateway.key.kid != old.kid
    resp = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert resp.status == 200, await resp.text()
    for name in ("lmc", "nadra"):
        node = fed.nodes[name]
        assert (await fed.events(name))[-1].outcome == "delivered"
        assert await _checkpoint_signed_by(node, node.gateway.key)


async def test_the_background_refresh_moves_the_gateway(
    fed: Federation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway's own loop (exchange.server.run_background) makes the move, and logs the
    command that revokes the old key."""
    caplog.set_level(logging.WARNING, logger="exchange.rotation")
    lmc = fed.nodes["lmc"]
    old = lmc.gateway.key
    now = _Now()
    rotation = _rotation(fed, tmp_path, "lmc", LMC, now)
    await _register(fed, LMC, rotate(rotation.key_file, passphrase=None))
    await _revoke(fed, old.kid)
    now.value = utcnow()  # the new key is valid from its registration
    stop = asyncio.Event()
    renewal = _renewal_of(fed)
    background = asyncio.create_task(
        run_background(lmc.gateway, lmc.trust, renewal, stop, rotation)
    )
    try:
        for _ in range(100):
            if lmc.gateway.key.kid != old.kid:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await background
    assert lmc.gateway.key.kid == rotation.current.kid != old.kid
    assert any(f"shahrah registry key revoke {old.kid}" in r.message for r in caplog.records)


def _renewal_of(fed: Federation) -> Renewal:
    lmc = fed.nodes["lmc"]
    return Renewal(lmc.gateway.id, lmc.tls, listener=lmc.trust.context, peers=lmc.gateway.peers)


async def test_a_move_cut_short_between_its_renames_is_finished(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    now = _Now()
    rotation = _rotation(fed, tmp_path, "lmc", LMC, now)
    jwk = rotate(rotation.key_file, passphrase=None)
    new = PrivateKey.load(renewed(rotation.key_file), None)
    renewed(rotation.key_file).replace(rotation.key_file)  # the key moved, then a crash
    restarted = KeyRotation(
        LMC, rotation.key_file, new, passphrase=None, use=lmc.gateway.use_key, clock=now
    )
    assert restarted.sync(lmc.gateway.globalconf.current()) is False
    assert not jwk.exists()
    assert PublicKey.from_jwk(json.loads(jwk_of(rotation.key_file).read_text())).kid == new.kid


async def test_a_new_key_file_that_is_not_the_registered_key_changes_nothing(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    old = lmc.gateway.key
    now = _Now()
    rotation = _rotation(fed, tmp_path, "lmc", LMC, now)
    jwk = rotate(rotation.key_file, passphrase=None)
    await _register(fed, LMC, jwk)
    view = lmc.gateway.globalconf.current()
    now.value = view.conf.expires_at + 2 * CLOCK_SKEW
    next_key = renewed(rotation.key_file)
    next_key.unlink()
    PrivateKey.generate().save(next_key, None)  # another key under the registered one's name
    with pytest.raises(ConflictError, match=r"holds key \S+, not "):
        rotation.sync(view)
    next_key.unlink()
    PrivateKey.generate().save(next_key, b"another passphrase")
    with pytest.raises(KeyFileError):
        rotation.sync(view)
    assert lmc.gateway.key is old
    assert PrivateKey.load(rotation.key_file, None).kid == old.kid
    assert jwk.exists()
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/still")).status == 200


async def test_a_second_rotation_is_refused_while_one_is_under_way(tmp_path: Path) -> None:
    key_file = tmp_path / "signing-key.pem"
    PrivateKey.generate().save(key_file, None)
    rotate(key_file, passphrase=None)
    with pytest.raises(ConflictError, match="a key rotation is under way"):
        rotate(key_file, passphrase=None)


async def _gauge(fed: Federation, name: str) -> float:
    text = await (await fed.http.get(fed.nodes["lmc"].local_url + "/metrics")).text()
    [value] = re.findall(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(value)


async def test_metrics_say_when_what_the_gateway_signs_is_refused(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    rotation = _rotation(fed, tmp_path, "lmc", LMC, _Now())
    lmc.gateway.metrics.follow_credentials(lambda: None, lambda: rotation.valid)
    name = "shahrah_gateway_signing_key_valid"
    assert math.isnan(await _gauge(fed, name))  # not read from a configuration yet
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    assert await _gauge(fed, name) == 1.0
    await _revoke(fed, lmc.gateway.key.kid)  # revoked with no new key to move to
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    assert await _gauge(fed, name) == 0.0


async def test_a_move_whose_second_rename_fails_signs_with_the_key_on_disk(
    fed: Federation, tmp_path: Path
) -> None:
    """The key file moved and the JWK's rename failed: the gateway signs with the key that
    is now signing-key.pem, never with one the disk no longer holds, and the next refresh
    finishes the rename."""
    lmc = fed.nodes["lmc"]
    old = lmc.gateway.key
    rotation = _rotation(fed, tmp_path, "lmc", LMC, _Now())
    jwk = rotate(rotation.key_file, passphrase=None)
    await _register(fed, LMC, jwk)
    await _revoke(fed, old.kid)
    rotation.clock = utcnow  # the new key is valid from its registration
    blocker = jwk_of(rotation.key_file)
    blocker.mkdir()
    (blocker / "in-the-way").touch()  # os.replace cannot put a file over this directory
    with pytest.raises(IsADirectoryError):
        rotation.sync(lmc.gateway.globalconf.current())
    assert lmc.gateway.key.kid == PrivateKey.load(rotation.key_file, None).kid != old.kid
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/meanwhile")).status == 200
    (blocker / "in-the-way").unlink()
    blocker.rmdir()
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    assert jwk_of(rotation.key_file).is_file()
    assert not jwk.exists()


@pytest.mark.parametrize("junk", [b"", b"{}", b"not json", b'{"kty": "RSA", "n": "x", "e": "y"}'])
async def test_a_next_jwk_that_is_no_key_is_not_a_rotation(
    fed: Federation, tmp_path: Path, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing to move to; the gateway still says so when its own key is not valid."""
    caplog.set_level(logging.ERROR, logger="exchange.rotation")
    lmc = fed.nodes["lmc"]
    rotation = _rotation(fed, tmp_path, "lmc", LMC, _Now())
    renewed(jwk_of(rotation.key_file)).write_bytes(junk)
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    assert rotation.valid is True
    await _revoke(fed, lmc.gateway.key.kid)
    assert rotation.sync(lmc.gateway.globalconf.current()) is False
    assert rotation.valid is False
    assert any("is not a valid key of PK/LG/LMC" in r.message for r in caplog.records)
