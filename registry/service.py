"""The operator's actions on the registry, each meant to run inside one transaction.

Callers (the HTTP API and the CLI) open the transaction with
:func:`core.db.transaction` and call one action; an error anywhere rolls the
whole action back, so nothing is ever half-written.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.canonical import canonical_json
from core.db import utcnow
from core.errors import BadRequestError, ConflictError, NotFoundError
from core.ids import ClientId, GatewayId, MemberId, ServiceId
from core.keys import PublicKey
from core.tls import Certificate
from registry import models as m
from registry import store
from registry.globalconf import (
    CentralServiceInfo,
    GatewayInfo,
    GroupInfo,
    KeyInfo,
    LocalGroupInfo,
    MemberInfo,
    PurposeInfo,
    SchemaRef,
    ServiceInfo,
)
from registry.payloads import (
    AccessRightCreate,
    AccessRightView,
    CentralServiceSet,
    FederationSettings,
    GatewayCreate,
    GatewayUpdate,
    GroupCreate,
    KeyCreate,
    LocalGroupCreate,
    MemberCreate,
    MemberUpdate,
    PurposeCreate,
    ServiceCreate,
    ServiceUpdate,
    SubsystemCreate,
    SubsystemUpdate,
)
from registry.schemareg import service as schemas

#: X-Road's defaults: gateways fetch every 60 s, a configuration is valid for 10 minutes.
DEFAULT_REFRESH = 60
DEFAULT_VALIDITY = 600


async def _flush(s: AsyncSession, conflict: str) -> None:
    """Flush pending rows, turning a uniqueness violation into a 409 that says what clashed."""
    try:
        await s.flush()
    except IntegrityError as e:
        raise ConflictError(conflict) from e


async def init_federation(
    s: AsyncSession,
    instance: str,
    *,
    validity: int = DEFAULT_VALIDITY,
    refresh: int = DEFAULT_REFRESH,
) -> m.Federation:
    if await s.get(m.Federation, 1) is not None:
        raise ConflictError("the registry is already initialised")
    fed = m.Federation(
        id=1, instance=instance, globalconf_validity=validity, globalconf_refresh=refresh
    )
    s.add(fed)
    await s.flush()
    return fed


async def update_federation(s: AsyncSession, body: FederationSettings) -> m.Federation:
    fed = await store.federation(s)
    if body.globalconf_validity is not None:
        fed.globalconf_validity = body.globalconf_validity
    if body.globalconf_refresh is not None:
        fed.globalconf_refresh = body.globalconf_refresh
    if fed.globalconf_refresh * 2 > fed.globalconf_validity:
        raise BadRequestError(
            "validity must be at least twice the refresh interval, "
            "or gateways would see configurations expire between fetches"
        )
    return fed


# --- members and subsystems -------------------------------------------------------------------


async def add_member(s: AsyncSession, body: MemberCreate) -> MemberInfo:
    fed = await store.federation(s)
    s.add(m.Member(member_class=body.member_class, member_code=body.member_code, name=body.name))
    mid = MemberId(fed.instance, body.member_class, body.member_code)
    await _flush(s, f"member {mid} already exists")
    return await get_member(s, mid)


async def update_member(s: AsyncSession, mid: MemberId, body: MemberUpdate) -> MemberInfo:
    row = await store.member(s, mid)
    if body.name is not None:
        row.name = body.name
    if body.status is not None:
        row.status = body.status
    return await get_member(s, mid)


async def get_member(s: AsyncSession, mid: MemberId) -> MemberInfo:
    return await store.member_info(s, mid)


async def add_subsystem(s: AsyncSession, body: SubsystemCreate) -> MemberInfo:
    owner = await store.member(s, body.id.member)
    s.add(m.Subsystem(member_id=owner.id, code=body.id.subsystem, name=body.name))
    await _flush(s, f"subsystem {body.id} already exists")
    return await get_member(s, body.id.member)


async def update_subsystem(s: AsyncSession, cid: ClientId, body: SubsystemUpdate) -> MemberInfo:
    row = await store.subsystem(s, cid)
    if body.name is not None:
        row.name = body.name
    if body.status is not None:
        row.status = body.status
    return await get_member(s, cid.member)


# --- gateways ---------------------------------------------------------------------------------


async def add_gateway(s: AsyncSession, body: GatewayCreate) -> GatewayInfo:
    owner = await store.member(s, body.id.member)
    cert = _certificate(body.tls_certificate)
    await _one_registration_at_a_time(s)
    await _refuse_pinned_elsewhere(s, cert, body.id)
    row = m.Gateway(
        member_id=owner.id,
        code=body.id.gateway_code,
        address=body.address,
        tls_certificate=cert.pem,
        tls_sha256=cert.sha256,
    )
    s.add(row)
    # Also where a concurrent registration took the certificate after the check above.
    await _flush(s, f"gateway {body.id} already exists, or its TLS certificate is another's")
    for client in body.clients:
        await _attach_client(s, row, body.id, client)
    return await get_gateway(s, body.id)


def _certificate(pem: str, *, field: str = "tls_certificate") -> Certificate:
    """A gateway's TLS certificate, refused (naming the field) unless it can be pinned."""
    try:
        return Certificate.from_pem(pem)
    except BadRequestError as e:
        raise BadRequestError(e.message, detail={"field": field}) from e


async def _one_registration_at_a_time(s: AsyncSession) -> None:
    """Hold the registry's one federation row until commit, so that certificate changes run
    one at a time. A pin must name one gateway across two columns (current and renewed),
    which no unique index spans; on PostgreSQL, under READ COMMITTED, two changes checked
    at once could each pass. SQLite's write transactions are serial already. Operators
    change certificates rarely: waiting costs nothing."""
    await s.execute(select(m.Federation.id).where(m.Federation.id == 1).with_for_update())


async def _refuse_pinned_elsewhere(
    s: AsyncSession, cert: Certificate, gid: GatewayId, *, field: str = "tls_certificate"
) -> None:
    """A pin names one gateway: gateways find a peer by its pin (current or renewed), so a
    second gateway with the same certificate would take the first one's place in every
    gateway's eyes."""
    fed = await store.federation(s)
    rows = await s.execute(
        select(m.Member.member_class, m.Member.member_code, m.Gateway.code)
        .join(m.Member, m.Gateway.member_id == m.Member.id)
        .where(or_(m.Gateway.tls_sha256 == cert.sha256, m.Gateway.next_tls_sha256 == cert.sha256))
        .order_by(m.Gateway.id)
    )
    for member_class, member_code, code in rows:
        other = GatewayId(fed.instance, member_class, member_code, code)
        if other != gid:
            raise ConflictError(
                f"this TLS certificate is already registered to gateway {other}; "
                "each gateway needs a certificate of its own",
                detail={"field": field, "gateway": str(other)},
            )


async def _attach_client(s: AsyncSession, gw: m.Gateway, gid: GatewayId, client: ClientId) -> None:
    if client.member != gid.member:
        raise BadRequestError(
            f"gateway {gid} can only serve subsystems of {gid.member}, not {client}"
        )
    sub = await store.subsystem(s, client)
    s.add(m.GatewayClient(gateway_id=gw.id, subsystem_id=sub.id))
    await _flush(s, f"{client} is already served by {gid}")


async def update_gateway(s: AsyncSession, gid: GatewayId, body: GatewayUpdate) -> GatewayInfo:
    if body.tls_certificate is not None or body.next_tls_certificate is not None:
        await _one_registration_at_a_time(s)  # before the row is read: it decides on it
    row = await store.gateway(s, gid)
    if body.address is not None:
        row.address = body.address
    if body.next_tls_certificate is not None and body.drop_next_tls_certificate:
        raise BadRequestError(
            "register a renewed certificate or drop it, not both",
            detail={"field": "drop_next_tls_certificate"},
        )
    if body.tls_certificate is not None:
        cert = _certificate(body.tls_certificate)
        await _refuse_pinned_elsewhere(s, cert, gid)
        if cert.sha256 == row.next_tls_sha256:  # the renewal completes: the old one goes
            row.next_tls_certificate = row.next_tls_sha256 = None
        row.tls_certificate, row.tls_sha256 = cert.pem, cert.sha256
    if body.next_tls_certificate is not None:
        cert = _certificate(body.next_tls_certificate, field="next_tls_certificate")
        if cert.sha256 == row.tls_sha256:
            raise BadRequestError(
                f"this is gateway {gid}'s current TLS certificate, not a renewed one",
                detail={"field": "next_tls_certificate"},
            )
        await _refuse_pinned_elsewhere(s, cert, gid, field="next_tls_certificate")
        row.next_tls_certificate, row.next_tls_sha256 = cert.pem, cert.sha256
    if body.drop_next_tls_certificate:
        row.next_tls_certificate = row.next_tls_sha256 = None
    # Each pin column's unique index holds its part of the rule in the database too.
    await _flush(s, "this TLS certificate is already registered to another gateway")
    if body.status is not None:
        row.status = body.status
    return await get_gateway(s, gid)


async def add_gateway_client(s: AsyncSession, gid: GatewayId, client: ClientId) -> GatewayInfo:
    await _attach_client(s, await store.gateway(s, gid), gid, client)
    return await get_gateway(s, gid)


async def remove_gateway_client(s: AsyncSession, gid: GatewayId, client: ClientId) -> GatewayInfo:
    gw = await store.gateway(s, gid)
    sub = await store.subsystem(s, client)
    result = await s.execute(
        delete(m.GatewayClient).where(
            m.GatewayClient.gateway_id == gw.id, m.GatewayClient.subsystem_id == sub.id
        )
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFoundError(f"{client} is not served by {gid}")
    return await get_gateway(s, gid)


async def get_gateway(s: AsyncSession, gid: GatewayId) -> GatewayInfo:
    return await store.gateway_info(s, gid)


# --- keys -------------------------------------------------------------------------------------


async def add_key(s: AsyncSession, body: KeyCreate, *, now: dt.datetime | None = None) -> KeyInfo:
    owner = await store.member(s, body.member)
    key = PublicKey.from_jwk(body.jwk)
    jwk = key.to_jwk()
    row = m.MemberKey(
        member_id=owner.id,
        kid=key.kid,
        jwk=canonical_json(jwk).decode(),
        not_before=body.not_before or now or utcnow(),
        not_after=body.not_after,
    )
    s.add(row)
    await _flush(s, f"key {key.kid} is already registered")
    return store.key_info(row)


async def revoke_key(s: AsyncSession, kid: str, *, now: dt.datetime | None = None) -> KeyInfo:
    row = await store.key(s, kid)
    if row.revoked_at is not None:
        raise ConflictError(f"key {kid} was already revoked at {row.revoked_at.isoformat()}")
    row.revoked_at = now or utcnow()
    return store.key_info(row)


# --- groups -----------------------------------------------------------------------------------


async def add_global_group(s: AsyncSession, body: GroupCreate) -> GroupInfo:
    s.add(m.GlobalGroup(code=body.code, description=body.description))
    await _flush(s, f"global group {body.code!r} already exists")
    return await get_global_group(s, body.code)


async def get_global_group(s: AsyncSession, code: str) -> GroupInfo:
    return await store.global_group_info(s, code)


async def add_global_group_member(s: AsyncSession, code: str, client: ClientId) -> GroupInfo:
    group = await store.global_group(s, code)
    sub = await store.subsystem(s, client)
    s.add(m.GlobalGroupMember(group_id=group.id, subsystem_id=sub.id))
    await _flush(s, f"{client} is already in global group {code!r}")
    return await get_global_group(s, code)


async def remove_global_group_member(s: AsyncSession, code: str, client: ClientId) -> GroupInfo:
    group = await store.global_group(s, code)
    sub = await store.subsystem(s, client)
    result = await s.execute(
        delete(m.GlobalGroupMember).where(
            m.GlobalGroupMember.group_id == group.id, m.GlobalGroupMember.subsystem_id == sub.id
        )
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFoundError(f"{client} is not in global group {code!r}")
    return await get_global_group(s, code)


async def add_local_group(s: AsyncSession, body: LocalGroupCreate) -> LocalGroupInfo:
    owner = await store.subsystem(s, body.owner)
    s.add(m.LocalGroup(owner_id=owner.id, code=body.code, description=body.description))
    await _flush(s, f"local group {body.code!r} of {body.owner} already exists")
    return await get_local_group(s, body.owner, body.code)


async def get_local_group(s: AsyncSession, owner: ClientId, code: str) -> LocalGroupInfo:
    return await store.local_group_info(s, owner, code)


async def add_local_group_member(
    s: AsyncSession, owner: ClientId, code: str, client: ClientId
) -> LocalGroupInfo:
    group = await store.local_group(s, owner, code)
    sub = await store.subsystem(s, client)
    s.add(m.LocalGroupMember(group_id=group.id, subsystem_id=sub.id))
    await _flush(s, f"{client} is already in local group {code!r} of {owner}")
    return await get_local_group(s, owner, code)


async def remove_local_group_member(
    s: AsyncSession, owner: ClientId, code: str, client: ClientId
) -> LocalGroupInfo:
    group = await store.local_group(s, owner, code)
    sub = await store.subsystem(s, client)
    result = await s.execute(
        delete(m.LocalGroupMember).where(
            m.LocalGroupMember.group_id == group.id, m.LocalGroupMember.subsystem_id == sub.id
        )
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFoundError(f"{client} is not in local group {code!r} of {owner}")
    return await get_local_group(s, owner, code)


# --- purposes and services --------------------------------------------------------------------


async def add_purpose(s: AsyncSession, body: PurposeCreate) -> PurposeInfo:
    s.add(m.Purpose(code=body.code, name=body.name, description=body.description))
    await _flush(s, f"purpose {body.code!r} already exists")
    return PurposeInfo(code=body.code, name=body.name, description=body.description)


async def add_service(s: AsyncSession, body: ServiceCreate) -> ServiceInfo:
    owner = await store.subsystem(s, body.id.provider)
    row = m.Service(
        subsystem_id=owner.id,
        code=body.id.service_code,
        version=body.id.version or "",
        title=body.title,
        description=body.description,
        requires_consent=body.requires_consent,
        subject_field=body.subject_field,
    )
    await _set_schemas(s, row, body.request_schema, body.response_schema)
    s.add(row)
    await _flush(s, f"service {body.id} already exists")
    await _set_purposes(s, row, body.purposes)
    info = await get_service(s, body.id)
    _check_consent_terms(info)
    return info


async def update_service(s: AsyncSession, sid: ServiceId, body: ServiceUpdate) -> ServiceInfo:
    row = await store.service(s, sid)
    fields = body.model_fields_set
    if body.title is not None:
        row.title = body.title
    if body.description is not None:
        row.description = body.description
    if "request_schema" in fields or "response_schema" in fields:
        current = await get_service(s, sid)
        await _set_schemas(
            s,
            row,
            body.request_schema if "request_schema" in fields else current.request_schema,
            body.response_schema if "response_schema" in fields else current.response_schema,
        )
    if body.requires_consent is not None:
        row.requires_consent = body.requires_consent
    if body.subject_field is not None:
        row.subject_field = body.subject_field
    if body.status is not None:
        row.status = body.status
    if body.purposes is not None:
        await s.execute(delete(m.ServicePurpose).where(m.ServicePurpose.service_id == row.id))
        await _set_purposes(s, row, body.purposes)
    info = await get_service(s, sid)
    _check_consent_terms(info)
    return info


def _check_consent_terms(info: ServiceInfo) -> None:
    """A service under consent names its purposes, and where its answer names the data
    subject: without that a consent for one citizen could fetch another's record."""
    if not info.requires_consent:
        return
    if not info.purposes:
        raise BadRequestError("a service that requires consent must name its allowed purposes")
    if info.subject_field is None:
        raise BadRequestError(
            "a service that requires consent must name its subject field: the JSON Pointer "
            "to the data subject's CNIC in its answer (e.g. /cnic)"
        )


async def _set_schemas(
    s: AsyncSession, row: m.Service, req: SchemaRef | None, resp: SchemaRef | None
) -> None:
    """Point the service at registered schemas only: a gateway could not validate against
    a schema the registry does not hold, and would fail every exchange."""
    for role, ref in (("request", req), ("response", resp)):
        if ref is None:
            continue
        try:
            await schemas.require_version(s, ref.subject, ref.version)
        except NotFoundError as e:
            raise NotFoundError(
                f"{role}_schema {ref.subject}:{ref.version} is not registered in the schema "
                f"registry ({e.message}); register it first (shahrah registry schema register)",
                detail={"field": f"{role}_schema", "subject": ref.subject, "version": ref.version},
            ) from e
    row.request_schema_subject = req.subject if req else None
    row.request_schema_version = req.version if req else None
    row.response_schema_subject = resp.subject if resp else None
    row.response_schema_version = resp.version if resp else None


async def _set_purposes(s: AsyncSession, row: m.Service, codes: list[str]) -> None:
    for purpose in await store.purposes(s, sorted(set(codes))):
        s.add(m.ServicePurpose(service_id=row.id, purpose_id=purpose.id))
    await s.flush()


async def get_service(s: AsyncSession, sid: ServiceId) -> ServiceInfo:
    return await store.service_info(s, sid)


# --- access rights ----------------------------------------------------------------------------


async def grant(s: AsyncSession, body: AccessRightCreate) -> AccessRightView:
    service = await store.service(s, body.service)
    row = m.AccessRight(service_id=service.id, method=body.method, path=body.path)
    if body.client is not None:
        row.subsystem_id = (await store.subsystem(s, body.client)).id
    elif body.global_group is not None:
        row.global_group_id = (await store.global_group(s, body.global_group)).id
    else:
        assert body.local_group is not None
        row.local_group_id = (
            await store.local_group(s, body.service.provider, body.local_group)
        ).id
    duplicate = await s.scalar(
        select(m.AccessRight.id).where(
            m.AccessRight.service_id == row.service_id,
            m.AccessRight.method == row.method,
            m.AccessRight.path == row.path,
            _same(m.AccessRight.subsystem_id, row.subsystem_id),
            _same(m.AccessRight.global_group_id, row.global_group_id),
            _same(m.AccessRight.local_group_id, row.local_group_id),
        )
    )
    if duplicate is not None:
        raise ConflictError(f"this access right already exists (id {duplicate})")
    s.add(row)
    await s.flush()
    return AccessRightView(id=row.id, **body.model_dump())


def _same(column: InstrumentedAttribute[int | None], value: int | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


async def revoke_access(s: AsyncSession, right_id: int) -> None:
    result = await s.execute(delete(m.AccessRight).where(m.AccessRight.id == right_id))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFoundError(f"no access right with id {right_id}")


# --- central services -------------------------------------------------------------------------


async def set_central_service(
    s: AsyncSession, name: str, body: CentralServiceSet
) -> CentralServiceInfo:
    keyset = body.keys.keyset()  # refuses malformed or private keys
    if not keyset:
        raise BadRequestError("a central service needs at least one public key")
    jwks = canonical_json(keyset.to_jwks()).decode()
    row = await s.get(m.CentralService, name)
    if row is None:
        s.add(m.CentralService(name=name, url=body.url, jwks=jwks))
    else:
        row.url, row.jwks, row.updated_at = body.url, jwks, utcnow()
    await s.flush()
    return CentralServiceInfo(
        name=name, url=body.url, keys=body.keys.model_validate(keyset.to_jwks())
    )
