"""Queries over the registry's tables.

Lookups by X-Road identifier raise NotFoundError naming what is missing; the
snapshot functions read the whole registry in a handful of queries and build
the global configuration's models from it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
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
    subs = {r.id: r for r in await s.scalars(select(m.Subsystem))}
    sub_ids = {
        sid: MemberId(
            inst, members[r.member_id].member_class, members[r.member_id].member_code
        ).subsystem(r.code)
        for sid, r in subs.items()
    }

    subs_by_member: dict[int, list[SubsystemInfo]] = defaultdict(list)
    for r in subs.values():
        subs_by_member[r.member_id].append(SubsystemInfo(code=r.code, name=r.name, status=r.status))
    keys_by_member: dict[int, list[KeyInfo]] = defaultdict(list)
    for k in await s.scalars(select(m.MemberKey).order_by(m.MemberKey.kid)):
        keys_by_member[k.member_id].append(
            KeyInfo(
                kid=k.kid,
                jwk=json.loads(k.jwk),
                not_before=k.not_before,
                not_after=k.not_after,
                revoked_at=k.revoked_at,
            )
        )
    member_infos = sorted(
        (
            MemberInfo(
                id=MemberId(inst, r.member_class, r.member_code),
                name=r.name,
                status=r.status,
                subsystems=sorted(subs_by_member[r.id], key=lambda x: x.code),
                keys=keys_by_member[r.id],
            )
            for r in members.values()
        ),
        key=lambda x: str(x.id),
    )

    clients_by_gateway: dict[int, list[ClientId]] = defaultdict(list)
    for gc in await s.scalars(select(m.GatewayClient)):
        clients_by_gateway[gc.gateway_id].append(sub_ids[gc.subsystem_id])
    gateways = sorted(
        (
            GatewayInfo(
                id=MemberId(
                    inst, members[g.member_id].member_class, members[g.member_id].member_code
                ).gateway(g.code),
                address=g.address,
                tls_certificate=g.tls_certificate,
                tls_sha256=g.tls_sha256,
                next_tls_certificate=g.next_tls_certificate,
                next_tls_sha256=g.next_tls_sha256,
                status=g.status,
                clients=sorted(clients_by_gateway[g.id], key=str),
            )
            for g in await s.scalars(select(m.Gateway))
        ),
        key=lambda x: str(x.id),
    )

    gg_members: dict[int, list[ClientId]] = defaultdict(list)
    for gm in await s.scalars(select(m.GlobalGroupMember)):
        gg_members[gm.group_id].append(sub_ids[gm.subsystem_id])
    global_groups_rows = {g.id: g for g in await s.scalars(select(m.GlobalGroup))}
    global_groups = sorted(
        (
            GroupInfo(
                code=g.code, description=g.description, members=sorted(gg_members[g.id], key=str)
            )
            for g in global_groups_rows.values()
        ),
        key=lambda x: x.code,
    )

    lg_members: dict[int, list[ClientId]] = defaultdict(list)
    for lm in await s.scalars(select(m.LocalGroupMember)):
        lg_members[lm.group_id].append(sub_ids[lm.subsystem_id])
    local_groups_rows = {g.id: g for g in await s.scalars(select(m.LocalGroup))}
    local_groups = sorted(
        (
            LocalGroupInfo(
                owner=sub_ids[g.owner_id],
                code=g.code,
                description=g.description,
                members=sorted(lg_members[g.id], key=str),
            )
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
            ServiceInfo(
                id=service_ids[r.id],
                title=r.title,
                description=r.description,
                request_schema=_ref(r.request_schema_subject, r.request_schema_version),
                response_schema=_ref(r.response_schema_subject, r.response_schema_version),
                requires_consent=r.requires_consent,
                subject_field=r.subject_field,
                purposes=sorted(purposes_by_service[r.id]),
                status=r.status,
            )
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
