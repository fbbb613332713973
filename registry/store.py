"""Queries over the registry's tables.

Lookups by X-Road identifier raise NotFoundError naming what is missing. The
``*_info`` functions read one item as the global configuration shows it (what an
operator's action answers with); the snapshot reads the whole registry in a handful
of queries and builds every item with the same functions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequestError, NotFoundError
from core.ids import ClientId, GatewayId, MemberId, ServiceId
from registry import models as m
from registry.globalconf import (
    CentralServiceInfo,
    GatewayInfo,
    GroupInfo,
    Jwks,
    KeyInfo,
    LocalGroupInfo,
    MemberInfo,
    PurposeInfo,
    SchemaRef,
    ServiceInfo,
    SubsystemInfo,
)
from registry.payloads import AccessRightView


async def federation(s: AsyncSession) -> m.Federation:
    fed = await s.get(m.Federation, 1)
    if fed is None:
        raise NotFoundError("the registry is not initialised: run `shahrah registry init`")
    return fed


async def _check_instance(s: AsyncSession, instance: str) -> None:
    fed = await federation(s)
    if instance != fed.instance:
        raise BadRequestError(f"instance {instance!r} is not this federation ({fed.instance!r})")


async def member(s: AsyncSession, mid: MemberId) -> m.Member:
    await _check_instance(s, mid.instance)
    row = await s.scalar(
        select(m.Member).where(
            m.Member.member_class == mid.member_class, m.Member.member_code == mid.member_code
        )
    )
    if row is None:
        raise NotFoundError(f"member {mid} is not registered")
    return row


async def subsystem(s: AsyncSession, cid: ClientId) -> m.Subsystem:
    if cid.subsystem is None:
        raise BadRequestError(f"{cid} names a member, not a subsystem")
    owner = await member(s, cid.member)
    row = await s.scalar(
        select(m.Subsystem).where(
            m.Subsystem.member_id == owner.id, m.Subsystem.code == cid.subsystem
        )
    )
    if row is None:
        raise NotFoundError(f"subsystem {cid} is not registered")
    return row


async def gateway(s: AsyncSession, gid: GatewayId) -> m.Gateway:
    owner = await member(s, gid.member)
    row = await s.scalar(
        select(m.Gateway).where(m.Gateway.member_id == owner.id, m.Gateway.code == gid.gateway_code)
    )
    if row is None:
        raise NotFoundError(f"gateway {gid} is not registered")
    return row


async def service(s: AsyncSession, sid: ServiceId) -> m.Service:
    owner = await subsystem(s, sid.provider)
    row = await s.scalar(
        select(m.Service).where(
            m.Service.subsystem_id == owner.id,
            m.Service.code == sid.service_code,
            m.Service.version == (sid.version or ""),
        )
    )
    if row is None:
        raise NotFoundError(f"service {sid} is not registered")
    return row


async def global_group(s: AsyncSession, code: str) -> m.GlobalGroup:
    row = await s.scalar(select(m.GlobalGroup).where(m.GlobalGroup.code == code))
    if row is None:
        raise NotFoundError(f"global group {code!r} does not exist")
    return row


async def local_group(s: AsyncSession, owner: ClientId, code: str) -> m.LocalGroup:
    sub = await subsystem(s, owner)
    row = await s.scalar(
        select(m.LocalGroup).where(m.LocalGroup.owner_id == sub.id, m.LocalGroup.code == code)
    )
    if row is None:
        raise NotFoundError(f"local group {code!r} of {owner} does not exist")
    return row


async def purposes(s: AsyncSession, codes: list[str]) -> list[m.Purpose]:
    rows = list(await s.scalars(select(m.Purpose).where(m.Purpose.code.in_(codes))))
    missing = sorted(set(codes) - {p.code for p in rows})
    if missing:
        raise NotFoundError(f"unknown purposes {missing}: add them to the catalogue first")
    return rows


async def key(s: AsyncSession, kid: str) -> m.MemberKey:
    row = await s.scalar(select(m.MemberKey).where(m.MemberKey.kid == kid))
    if row is None:
        raise NotFoundError(f"no key with id {kid!r}")
    return row


# --- one item as the global configuration shows it ------------------------------------------
# The operator's actions answer with the item they changed. Each reads only that item's rows;
# the snapshot below builds every item with the same functions.


async def member_info(s: AsyncSession, mid: MemberId) -> MemberInfo:
    row = await member(s, mid)
    subs = await s.scalars(select(m.Subsystem).where(m.Subsystem.member_id == row.id))
    keys = await s.scalars(
        select(m.MemberKey).where(m.MemberKey.member_id == row.id).order_by(m.MemberKey.kid)
    )
    return _member_info(mid, row, subs, keys)


async def gateway_info(s: AsyncSession, gid: GatewayId) -> GatewayInfo:
    row = await gateway(s, gid)
    clients = select(m.GatewayClient.subsystem_id).where(m.GatewayClient.gateway_id == row.id)
    return _gateway_info(gid, row, await _client_ids(s, gid.instance, clients))


async def global_group_info(s: AsyncSession, code: str) -> GroupInfo:
    row = await global_group(s, code)
    members = select(m.GlobalGroupMember.subsystem_id).where(m.GlobalGroupMember.group_id == row.id)
    return _global_group_info(row, await _client_ids(s, (await federation(s)).instance, members))


async def local_group_info(s: AsyncSession, owner: ClientId, code: str) -> LocalGroupInfo:
    row = await local_group(s, owner, code)
    members = select(m.LocalGroupMember.subsystem_id).where(m.LocalGroupMember.group_id == row.id)
    return _local_group_info(owner, row, await _client_ids(s, owner.instance, members))


async def service_info(s: AsyncSession, sid: ServiceId) -> ServiceInfo:
    row = await service(s, sid)
    codes = await s.scalars(
        select(m.Purpose.code)
        .join(m.ServicePurpose, m.ServicePurpose.purpose_id == m.Purpose.id)
        .where(m.ServicePurpose.service_id == row.id)
    )
    return _service_info(sid, row, codes)


async def _client_ids(s: AsyncSession, instance: str, subsystem_ids: Select[Any]) -> list[ClientId]:
    rows = await s.execute(
        select(m.Member.member_class, m.Member.member_code, m.Subsystem.code)
        .join(m.Member, m.Subsystem.member_id == m.Member.id)
        .where(m.Subsystem.id.in_(subsystem_ids))
    )
    return sorted((MemberId(instance, c, k).subsystem(code) for c, k, code in rows), key=str)


def key_info(row: m.MemberKey) -> KeyInfo:
    return KeyInfo(
        kid=row.kid,
        jwk=json.loads(row.jwk),
        not_before=row.not_before,
        not_after=row.not_after,
        revoked_at=row.revoked_at,
    )


def _member_info(
    mid: MemberId, row: m.Member, subs: Iterable[m.Subsystem], keys: Iterable[m.MemberKey]
) -> MemberInfo:
    return MemberInfo(
        id=mid,
        name=row.name,
        status=row.status,
        subsystems=sorted(
            (SubsystemInfo(code=x.code, name=x.name, status=x.status) for x in subs),
            key=lambda x: x.code,
        ),
        keys=[key_info(k) for k in keys],
    )


def _gateway_info(gid: GatewayId, row: m.Gateway, clients: list[ClientId]) -> GatewayInfo:
    return GatewayInfo(
        id=gid,
        address=row.address,
        tls_certificate=row.tls_certificate,
        tls_sha256=row.tls_sha256,
        next_tls_certificate=row.next_tls_certificate,
        next_tls_sha256=row.next_tls_sha256,
        status=row.status,
        clients=sorted(clients, key=str),
    )


def _global_group_info(row: m.GlobalGroup, members: list[ClientId]) -> GroupInfo:
    return GroupInfo(code=row.code, description=row.description, members=sorted(members, key=str))


def _local_group_info(
    owner: ClientId, row: m.LocalGroup, members: list[ClientId]
) -> LocalGroupInfo:
    return LocalGroupInfo(
        owner=owner,
        code=row.code,
        description=row.description,
        members=sorted(members, key=str),
    )


def _service_info(sid: ServiceId, row: m.Service, purposes: Iterable[str]) -> ServiceInfo:
    return ServiceInfo(
        id=sid,
        title=row.title,
        description=row.description,
        request_schema=_ref(row.request_schema_subject, row.request_schema_version),
        response_schema=_ref(row.response_schema_subject, row.response_schema_version),
        requires_consent=row.requires_consent,
        subject_field=row.subject_field,
        purposes=sorted(purposes),
        status=row.status,
    )


# --- the whole registry -----------------------------------------------------------------------


@dataclass
class Snapshot:
    """The registry's content as the global configuration's models, sorted by identifier."""

    instance: str
    members: list[MemberInfo]
    gateways: list[GatewayInfo]
    global_groups: list[GroupInfo]
    local_groups: list[LocalGroupInfo]
    purposes: list[PurposeInfo]
    services: list[ServiceInfo]
    access_rights: list[AccessRightView]
    central_services: list[CentralServiceInfo]


async def snapshot(s: AsyncSession) -> Snapshot:
    """Read everything a global configuration carries, in one consistent transaction."""
    fed = await federation(s)
    inst = fed.instance
    members = {r.id: r for r in await s.scalars(select(m.Member))}
    member_ids = {i: MemberId(inst, r.member_class, r.member_code) for i, r in members.items()}
    subs = {r.id: r for r in await s.scalars(select(m.Subsystem))}
    sub_ids = {i: member_ids[r.member_id].subsystem(r.code) for i, r in subs.items()}

    subs_by_member: dict[int, list[m.Subsystem]] = defaultdict(list)
    for r in subs.values():
        subs_by_member[r.member_id].append(r)
    keys_by_member: dict[int, list[m.MemberKey]] = defaultdict(list)
    for k in await s.scalars(select(m.MemberKey).order_by(m.MemberKey.kid)):
        keys_by_member[k.member_id].append(k)
    member_infos = sorted(
        (
            _member_info(member_ids[i], r, subs_by_member[i], keys_by_member[i])
            for i, r in members.items()
        ),
        key=lambda x: str(x.id),
    )

    clients_by_gateway: dict[int, list[ClientId]] = defaultdict(list)
    for gc in await s.scalars(select(m.GatewayClient)):
        clients_by_gateway[gc.gateway_id].append(sub_ids[gc.subsystem_id])
    gateways = sorted(
        (
            _gateway_info(member_ids[g.member_id].gateway(g.code), g, clients_by_gateway[g.id])
            for g in await s.scalars(select(m.Gateway))
        ),
        key=lambda x: str(x.id),
    )

    gg_members: dict[int, list[ClientId]] = defaultdict(list)
    for gm in await s.scalars(select(m.GlobalGroupMember)):
        gg_members[gm.group_id].append(sub_ids[gm.subsystem_id])
    global_groups_rows = {g.id: g for g in await s.scalars(select(m.GlobalGroup))}
    global_groups = sorted(
        (_global_group_info(g, gg_members[g.id]) for g in global_groups_rows.values()),
        key=lambda x: x.code,
    )

    lg_members: dict[int, list[ClientId]] = defaultdict(list)
    for lm in await s.scalars(select(m.LocalGroupMember)):
        lg_members[lm.group_id].append(sub_ids[lm.subsystem_id])
    local_groups_rows = {g.id: g for g in await s.scalars(select(m.LocalGroup))}
    local_groups = sorted(
        (
            _local_group_info(sub_ids[g.owner_id], g, lg_members[g.id])
            for g in local_groups_rows.values()
        ),
        key=lambda x: (str(x.owner), x.code),
    )

    purpose_rows = {p.id: p for p in await s.scalars(select(m.Purpose))}
    purposes_ = sorted(
        (
            PurposeInfo(code=p.code, name=p.name, description=p.description)
            for p in purpose_rows.values()
        ),
        key=lambda x: x.code,
    )

    purposes_by_service: dict[int, list[str]] = defaultdict(list)
    for sp in await s.scalars(select(m.ServicePurpose)):
        purposes_by_service[sp.service_id].append(purpose_rows[sp.purpose_id].code)
    service_rows = {r.id: r for r in await s.scalars(select(m.Service))}
    service_ids = {
        r.id: sub_ids[r.subsystem_id].service(r.code, r.version or None)
        for r in service_rows.values()
    }
    services = sorted(
        (
            _service_info(service_ids[r.id], r, purposes_by_service[r.id])
            for r in service_rows.values()
        ),
        key=lambda x: str(x.id),
    )

    rights = sorted(
        (
            AccessRightView(
                id=a.id,
                service=service_ids[a.service_id],
                method=a.method,
                path=a.path,
                client=sub_ids[a.subsystem_id] if a.subsystem_id is not None else None,
                global_group=global_groups_rows[a.global_group_id].code
                if a.global_group_id is not None
                else None,
                local_group=local_groups_rows[a.local_group_id].code
                if a.local_group_id is not None
                else None,
            )
            for a in await s.scalars(select(m.AccessRight))
        ),
        key=lambda x: (
            str(x.service),
            x.method,
            x.path,
            str(x.client),
            str(x.global_group),
            str(x.local_group),
        ),
    )

    central = sorted(
        (
            CentralServiceInfo(name=c.name, url=c.url, keys=Jwks.model_validate_json(c.jwks))
            for c in await s.scalars(select(m.CentralService))
        ),
        key=lambda x: x.name,
    )
    return Snapshot(
        inst,
        member_infos,
        gateways,
        global_groups,
        local_groups,
        purposes_,
        services,
        rights,
        central,
    )


def _ref(subject: str | None, version: int | None) -> SchemaRef | None:
    if subject is None or version is None:
        return None
    return SchemaRef(subject=subject, version=version)
