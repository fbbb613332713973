"""The log's side of the witness protocol: submit a checkpoint, get a verified cosignature.

The witness is the federation's central service ``audit-witness``: its URL
and public key come from the verified global configuration, so a gateway
needs no separate witness settings. A gateway signs each submission as its
member (registry.memberauth, audience ``audit-witness``); a central service
that keeps a log (e.g. consent) submits without, its checkpoint signature
being its credential.

The request is tlog-witness's ``add-checkpoint`` carried as JSON, plus the
entries the checkpoint adds, which the witness needs to mirror the log. The
statuses are tlog-witness's: 409 says which size the witness holds, 403 that
no signature verified, 422 that the proof or entries do not add up.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from audit.errors import (
    WitnessConflictError,
    WitnessRefusedError,
    WitnessUnavailableError,
)
from audit.identity import log_keys_at
from audit.note import (
    Checkpoint,
    Note,
    NoteError,
    NoteSignature,
    b64encode_hash,
    cosignature_key_id,
    log_key_id,
    log_origin,
    verify_cosignature,
    verify_log_signature,
    witness_name,
)
from core.errors import InvalidSignatureError
from core.ids import ClientId
from core.keys import PrivateKey, PublicKey
from core.web import describe_failure, read_up_to
from registry.globalconf import GlobalConfView
from registry.memberauth import sign_request
from registry.serviceauth import sign_service_request

__all__ = [
    "ADD_CHECKPOINT",
    "READ_BACK",
    "WITNESS_SERVICE",
    "Cosigned",
    "Mirrored",
    "WitnessClient",
    "post_bounded",
]

WITNESS_SERVICE = "audit-witness"
ADD_CHECKPOINT = "/witness/v1/add-checkpoint"
READ_BACK = "/witness/v1/read-back"
TIMEOUT = 30.0  # seconds for one submission
_MAX_ANSWER = 64 * 1024  # bytes
_MAX_READ_ANSWER = 25 * 2**20  # bytes: a page of read-back entries (audit.witness)
_MAX_MESSAGE = 500  # characters of a witness's error message worth quoting


@dataclass(frozen=True)
class Cosigned:
    """The witness's verified cosignature and the time it states (POSIX seconds)."""

    signature: NoteSignature
    timestamp: int


@dataclass(frozen=True)
class Mirrored:
    """A page of the witness's mirror of a log, and the checkpoint it cosigned last."""

    note: Note  # log-signed and cosigned
    checkpoint: Checkpoint
    cosigned_at: int  # POSIX seconds, as the verified cosignature states
    start: int  # the index of the first entry
    entries: list[bytes]


class WitnessClient:
    """Submits checkpoints of one federation's logs to its audit witness."""

    def __init__(
        self,
        view: Callable[[], GlobalConfView],
        http: aiohttp.ClientSession,
        *,
        key: PrivateKey | None = None,
        client: ClientId | None = None,
        service: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        """``key`` signs requests as a member with ``client`` (gateways), or as the central
        service ``service`` (which reads back its log only: its submissions are
        authenticated by their checkpoint signature). Without a key, nothing is signed."""
        if (key is None) != (client is None and service is None) or (client and service):
            raise ValueError("give the key with either the member's client or the service")
        self.view = view
        self.http = http
        self.key = key
        self.client = client
        self.service = service
        self.timeout = timeout

    def use_key(self, key: PrivateKey) -> None:
        """Sign submissions with ``key`` from now on (if this client signs as a member)."""
        if self.key is None:
            raise ValueError("this witness client submits for a central service, unsigned")
        self.key = key

    async def add_checkpoint(
        self,
        log_id: str,
        old_size: int,
        consistency: Sequence[bytes],
        checkpoint: Note,
        entries: Sequence[bytes],
    ) -> Cosigned:
        """Submit ``checkpoint``, which extends the witness's ``old_size`` by ``entries``.

        Returns the cosignature after checking it against the witness key in
        the global configuration. Raises WitnessConflictError (with the size
        the witness holds), WitnessRefusedError or WitnessUnavailableError.
        """
        view = self.view()
        status, document = await self._post(
            view,
            ADD_CHECKPOINT,
            {
                "log_id": log_id,
                "old_size": old_size,
                "consistency": [b64encode_hash(h) for h in consistency],
                "checkpoint": checkpoint.render(),
                "entries": [e.decode("utf-8") for e in entries],
            },
            _MAX_ANSWER,
        )
        if status == 200:
            return self._cosignature(view, checkpoint, document)
        message = _message(document, status)
        detail = document.get("detail")
        # A 409 that raised an alarm refuses this history; any other says where to resume.
        if status == 409 and isinstance(detail, dict) and "alarm" not in detail:
            size = detail.get("size")
            if type(size) is int:
                raise WitnessConflictError(message, size=size)
        if status in (400, 401, 403, 404, 409, 413, 422):
            raise WitnessRefusedError(f"the audit witness refused the checkpoint: {message}")
        raise WitnessUnavailableError(f"the audit witness answered HTTP {status}: {message}")

    async def read_back(self, log_id: str, start: int, end: int) -> Mirrored:
        """Entries ``start`` to ``end`` (exclusive, at most MAX_READ_BACK) of the witness's
        mirror of ``log_id``, with its newest checkpoint, whose cosignature is checked here
        against the witness key in the global configuration."""
        view = self.view()
        status, document = await self._post(
            view, READ_BACK, {"log_id": log_id, "start": start, "end": end}, _MAX_READ_ANSWER
        )
        if status != 200:
            message = _message(document, status)
            if status in (400, 401, 403, 404):
                raise WitnessRefusedError(f"the audit witness refused to read back: {message}")
            raise WitnessUnavailableError(f"the audit witness answered HTTP {status}: {message}")
        text, entries = document.get("checkpoint"), document.get("entries")
        if not isinstance(text, str) or not isinstance(entries, list):
            raise WitnessUnavailableError("the audit witness answered without entries")
        try:
            data = [e.encode("utf-8") for e in entries]
        except (AttributeError, UnicodeEncodeError) as e:
            raise WitnessUnavailableError(
                "the audit witness answered entries that are not text"
            ) from e
        note, checkpoint, cosigned_at = self._witnessed(view, log_id, text)
        if len(data) != max(0, min(end, checkpoint.size) - start):
            raise WitnessUnavailableError(
                f"the audit witness answered {len(data)} entries from {start} of a log of "
                f"{checkpoint.size}, asked for those before {end}"
            )
        return Mirrored(note, checkpoint, cosigned_at, start, data)

    def _witnessed(
        self, view: GlobalConfView, log_id: str, text: str
    ) -> tuple[Note, Checkpoint, int]:
        """The checkpoint a read-back comes with, believed only if the witness cosigned it and
        a key of the log's member valid then signed it (as the witness checked before it
        cosigned): a witness's key alone cannot vouch for a history the gateway never wrote.
        Returns the note with only those two signatures, and the cosignature's time."""
        try:
            note = Note.parse(text)
            checkpoint = Checkpoint.parse(note.text)
        except NoteError as e:
            raise WitnessUnavailableError(f"the witness's checkpoint is malformed: {e}") from e
        if checkpoint.origin != log_origin(log_id):
            raise WitnessUnavailableError(
                f"the witness answered a checkpoint of {checkpoint.origin}, not of {log_id}"
            )
        name = witness_name(view.conf.instance)
        for witness_key in view.central_service(WITNESS_SERVICE).keys.keyset().values():
            cosigned_at = _cosigned_at(note, name, witness_key)
            if cosigned_at is not None:
                break
        else:
            raise WitnessUnavailableError("the witness's checkpoint has no cosignature of its key")
        when = dt.datetime.fromtimestamp(cosigned_at, dt.UTC)
        try:
            key = verify_log_signature(note, checkpoint.origin, log_keys_at(view, log_id, when))
        except InvalidSignatureError as e:
            raise WitnessUnavailableError(
                f"the witness's checkpoint of {log_id} is not signed by a key of the log "
                f"valid when it was cosigned: {e.message}"
            ) from e
        kept = {
            (checkpoint.origin, log_key_id(key)),
            (name, cosignature_key_id(name, witness_key)),
        }
        own = tuple(x for x in note.signatures if (x.name, x.key_id) in kept)
        return Note(note.text, own), checkpoint, cosigned_at

    async def _post(
        self, view: GlobalConfView, path: str, document: dict[str, Any], limit: int
    ) -> tuple[int, dict[str, Any]]:
        """POST ``document`` to the witness, signed as the member if this client has a key;
        the status and the answer's JSON object ({} if it is none)."""
        url = view.central_service(WITNESS_SERVICE).url.rstrip("/") + path
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.key is not None:  # as the member (a gateway) or as the central service
            target, audience = urlsplit(url).path, WITNESS_SERVICE
            headers["Authorization"] = (
                sign_request(
                    self.key, self.client, audience=audience, method="POST", path=target, body=body
                )
                if self.client is not None
                else sign_service_request(
                    self.key,
                    str(self.service),
                    audience=audience,
                    method="POST",
                    path=target,
                    body=body,
                )
            )
        try:
            status, answer = await post_bounded(
                self.http, url, body, headers, seconds=self.timeout, limit=limit
            )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise WitnessUnavailableError(
                f"cannot reach the audit witness at {url}: {describe_failure(e)}"
            ) from e
        return status, _json(answer)

    def _cosignature(
        self, view: GlobalConfView, checkpoint: Note, document: dict[str, Any]
    ) -> Cosigned:
        name = witness_name(view.conf.instance)
        lines = document.get("cosignatures")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise WitnessUnavailableError("the audit witness answered without cosignatures")
        try:
            note = Note.parse(checkpoint.text + "\n" + "".join(lines))
        except NoteError as e:
            raise WitnessUnavailableError(f"the witness's cosignature is malformed: {e}") from e
        keys = view.central_service(WITNESS_SERVICE).keys.keyset()
        for key in keys.values():
            try:
                timestamp = verify_cosignature(note, name, key)
            except InvalidSignatureError:
                continue
            key_id = cosignature_key_id(name, key)
            signature = next(s for s in note.signatures if s.name == name and s.key_id == key_id)
            return Cosigned(signature, timestamp)
        raise WitnessUnavailableError("the witness's cosignature does not verify with its key")


async def post_bounded(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float,
    limit: int,
) -> tuple[int, bytes]:
    """POST to a central service; its status and at most ``limit`` bytes of its answer.

    Redirects are not followed (a signed request is bound to its path); connection
    failures and timeouts propagate as aiohttp.ClientError and TimeoutError."""
    async with http.post(
        url,
        data=body,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=seconds),
        allow_redirects=False,
    ) as resp:
        return resp.status, await read_up_to(resp.content, limit)


def _cosigned_at(note: Note, name: str, key: PublicKey) -> int | None:
    """The time ``key`` cosigned ``note`` at, or None if it did not."""
    try:
        return verify_cosignature(note, name, key)
    except InvalidSignatureError:
        return None


def _message(document: dict[str, Any], status: int) -> str:
    """The witness's error message, cut short: it is quoted in logs and errors."""
    return str(document.get("message", f"HTTP {status}"))[:_MAX_MESSAGE]


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # 64 KiB of '[' is too deep
        return {}
    return value if isinstance(value, dict) else {}
