"""Moving a gateway to a new member signing key without a restart or a refused exchange.

Peers verify what a gateway signs (request envelopes, answers) with the keys
their configuration lists for its member, and the central services do the same
(the audit witness its checkpoints, the consent service and the registry its
requests), so a gateway that simply started signing with a new key would be
refused until each had fetched a configuration listing it. The steps, as for a
renewed TLS certificate (exchange.renewal):

1. ``shahrah gateway rotate-key`` writes the new key beside the current one
   (:func:`rotate`: ``signing-key.next.pem`` under the keys' passphrase, and its
   public JWK ``signing-key.next.jwk``);
2. the operator registers it (``shahrah registry key add``);
3. the gateway signs with it (:class:`KeyRotation`) once every working peer and
   central service accepts it (exchange.acceptance says when), or at once if the
   current key is not valid any more (revoked first);
4. the operator revokes the old key once what it signed is done: after the
   freshness window, and one configuration validity more.

Moving loads the new key before touching a file (a key that does not load, or
is not the registered one, changes nothing), replaces the current key file and
then its JWK (a start after a crash between the two finishes the second), and
hands the key to every signer of the gateway at once (``use``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from core.db import utcnow
from core.errors import ConflictError, InvalidSignatureError, ShahrahError
from core.files import write_atomic
from core.ids import MemberId
from core.keys import PrivateKey, PublicKey
from exchange.acceptance import Acceptance
from exchange.renewal import renewed
from registry.globalconf import GlobalConfView

__all__ = ["KeyRotation", "jwk_of", "rotate"]

log = logging.getLogger(__name__)


def jwk_of(key_file: Path) -> Path:
    """Where the public JWK of the key in ``key_file`` is kept: ``signing-key.jwk``."""
    return key_file.with_suffix(".jwk")


def rotate(key_file: Path, *, passphrase: bytes | None) -> Path:
    """Write a new member signing key beside ``key_file``, under ``passphrase``; returns its
    public JWK's path, for the operator to register.

    Refuses while a rotation is under way (its files exist): replacing a registered new key
    would leave the registry listing one no gateway holds.
    """
    next_key, next_jwk = renewed(key_file), renewed(jwk_of(key_file))
    for path in (next_key, next_jwk):
        if path.exists():
            raise ConflictError(
                f"{path} exists: a key rotation is under way. Register it, or remove both "
                f"{next_key.name} and {next_jwk.name} to start again"
            )
    key = PrivateKey.generate()
    key.save(next_key, passphrase)
    write_atomic(next_jwk, (json.dumps(key.public().to_jwk(), indent=2) + "\n").encode())
    return next_jwk


def _pending(path: Path) -> str | None:
    """The key id of the public JWK in ``path``; None if there is none to move to."""
    try:
        return PublicKey.from_jwk(json.loads(path.read_bytes())).kid
    except (OSError, ValueError, TypeError, KeyError, ShahrahError):
        return None


class KeyRotation:
    """Moves this gateway to its new signing key when the configuration allows."""

    def __init__(
        self,
        member: MemberId,
        key_file: Path,
        current: PrivateKey,
        *,
        passphrase: bytes | None,
        use: Callable[[PrivateKey], None],
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.member = member
        self.key_file = key_file
        self.current = current
        self.passphrase = passphrase
        self.use = use
        self.clock = clock
        self._acceptance = Acceptance("the new signing key", clock)
        # Whether the held configuration accepts the key signed with now (for /metrics).
        self.valid: bool | None = None

    def _valid(self, view: GlobalConfView) -> set[str]:
        """The member's keys that verify what is signed now."""
        info = view.members.get(self.member)
        now = self.clock()
        valid = set()
        for key in info.keys if info else []:
            try:
                view.signing_key(self.member, key.kid, now)
            except InvalidSignatureError:
                continue
            valid.add(key.kid)
        return valid

    def sync(self, view: GlobalConfView) -> bool:
        """Sign with the new key if ``view`` shows everyone accepts it (or nobody accepts the
        current one any more); returns whether it moved."""
        next_key, next_jwk = renewed(self.key_file), renewed(jwk_of(self.key_file))
        pending = _pending(next_jwk)
        if pending == self.current.kid and not next_key.exists():
            os.replace(next_jwk, jwk_of(self.key_file))  # a move cut short between its renames
            pending = None
        valid = self._valid(view)
        self.valid = self.current.kid in valid
        if pending is None or pending == self.current.kid or pending not in valid:
            self._acceptance.forget()
            if self.current.kid not in valid:
                log.error(
                    "what this gateway signs is refused: its signing key %s is not a valid key "
                    "of %s (revoked, expired, or not registered)",
                    self.current.kid,
                    self.member,
                )
            return False
        # The current key revoked first: nobody accepts it any more, so move at once.
        if self.current.kid in valid and not self._acceptance.accepted(pending, view):
            return False
        self._move(pending)
        return True

    def _move(self, kid: str) -> None:
        next_key, next_jwk = renewed(self.key_file), renewed(jwk_of(self.key_file))
        key = PrivateKey.load(next_key, self.passphrase)
        if key.kid != kid:
            raise ConflictError(f"{next_key} holds key {key.kid}, not {kid} of {next_jwk}")
        os.replace(next_key, self.key_file)
        # In use from the moment it is the key on disk: should the JWK's rename fail, the
        # next sync finishes it.
        old, self.current = self.current.kid, key
        self.use(key)
        self.valid = True  # moved to a valid one
        self._acceptance.done()
        os.replace(next_jwk, jwk_of(self.key_file))
        log.warning(
            "now signing with the new key %s; once what the old one signed is done (the "
            "freshness window, then one configuration validity), have the registry operator "
            "revoke it: shahrah registry key revoke %s",
            kid,
            old,
        )
