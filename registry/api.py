"""The registry's HTTP API: the signed global configuration for gateways, and the
operator's management API (reads and writes need the operator's bearer token).

Every write is one transaction and wakes the publisher, so the next global
configuration carries it within moments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Sessions, transaction
from core.errors import NotFoundError, OutdatedGlobalConfError
from core.ids import ClientId, GatewayId, MemberId, ServiceId
from core.web import Api, bearer_token, parse_model, path_id
from registry import publisher, service, store, tokens
from registry.fetch_reports import FetchReports
from registry.globalconf import (
    CentralServiceInfo,
    GatewayInfo,
    GroupInfo,
    KeyInfo,
    LocalGroupInfo,
    MemberInfo,
    PurposeInfo,
    ServiceInfo,
)
from registry.payloads import (
    AccessRightCreate,
    AccessRightView,
    CentralServiceSet,
    ClientRef,
    FederationSettings,
    FederationView,
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

T = TypeVar("T")

api = Api(
    title="Shahrah central registry",
    version="1",
    description=(
        "Members, gateways, keys, services, access rights and the signed global configuration "
        "of a Shahrah federation (X-Road's central server)."
    ),
    security_schemes={"operator": {"type": "http", "scheme": "bearer"}},
)


@dataclass
class RegistryState:
    """What the registry's handlers share: the database, the instance, the publisher's bell."""

    sessions: Sessions
    instance: str
    wake_publisher: asyncio.Event
    admin_token: str | None
    fetches: FetchReports


STATE = web.AppKey("registry_state", RegistryState)

OP = "operator"


async def operator(request: web.Request) -> str:
    """Authenticate the operator's bearer token; returns the token's name."""
    token = bearer_token(request)
    state = request.config_dict[STATE]  # also reached from sub-applications
    async with transaction(state.sessions, write=False) as s:
        return await tokens.check(s, token, state.admin_token)


async def write(request: web.Request, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one operator action in one transaction, then wake the publisher (the API and the
    operator console both change the registry through here)."""
    state = request.app[STATE]
    async with transaction(state.sessions) as s:
        result = await action(s)
    state.wake_publisher.set()
    return result


async def read(request: web.Request, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with transaction(request.app[STATE].sessions, write=False) as s:
        return await action(s)


def _member(request: web.Request) -> MemberId:
    i = request.match_info
    return MemberId(request.app[STATE].instance, i["cls"], i["code"])


def _subsystem(request: web.Request) -> ClientId:
    return _member(request).subsystem(request.match_info["sub"])


def _service(request: web.Request) -> ServiceId:
    version = request.match_info.get("version")
    return _subsystem(request).service(request.match_info["service"], version)


def _gateway(request: web.Request) -> GatewayId:
    return _member(request).gateway(request.match_info["gw"])


# --- for gateways --------------------------------------------------------------------------------


@api.route(
    "GET",
    "/globalconf",
    summary="The signed global configuration",
    response={
        "type": "string",
        "description": "compact JWS (RFC 7515) with the configuration as attached payload",
    },
    content_type="application/jose",
    errors=(503,),
    tags=("globalconf",),
)
async def get_globalconf(request: web.Request) -> web.StreamResponse:
    """Served as ``application/jose`` with a strong ETag; ``If-None-Match`` gets 304.
    A fetch signed with a member key is recorded (see :mod:`registry.fetch_reports`)."""
    state = request.app[STATE]
    latest = await publisher.latest(state.sessions)
    if latest is None:
        raise OutdatedGlobalConfError("no global configuration has been published yet")
    await state.fetches.observe(request, latest)
    headers = {"ETag": latest.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == latest.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(text=latest.signed, content_type="application/jose", headers=headers)


@api.route("GET", "/healthz", summary="Liveness", response={"type": "object"}, tags=("operations",))
async def healthz(request: web.Request) -> dict[str, Any]:
    latest = await publisher.latest(request.app[STATE].sessions)
    return {"status": "ok", "serial": latest.serial if latest else None}


# --- federation ----------------------------------------------------------------------------------


@api.route(
    "GET",
    "/api/v1/federation",
    summary="Instance and publishing settings",
    response=FederationView,
    auth=OP,
    tags=("federation",),
)
async def get_federation(request: web.Request, principal: str) -> FederationView:
    sessions = request.app[STATE].sessions
    latest = await publisher.latest(sessions)
    fed = await read(request, store.federation)
    return FederationView(
        instance=fed.instance,
        globalconf_validity=fed.globalconf_validity,
        globalconf_refresh=fed.globalconf_refresh,
        serial=latest.serial if latest else None,
        issued_at=latest.issued_at if latest else None,
        expires_at=latest.expires_at if latest else None,
    )


@api.route(
    "PATCH",
    "/api/v1/federation",
    summary="Change publishing settings",
    body=FederationSettings,
    response=FederationView,
    auth=OP,
    tags=("federation",),
)
async def patch_federation(request: web.Request, principal: str, body: FederationSettings) -> Any:
    await write(request, lambda s: service.update_federation(s, body))
    return await get_federation(request, principal)


# --- members -------------------------------------------------------------------------------------

M = "/api/v1/members/{cls}/{code}"


@api.route(
    "GET",
    "/api/v1/members",
    summary="All members with subsystems and keys",
    response=list[MemberInfo],
    auth=OP,
    tags=("members",),
)
async def list_members(request: web.Request, principal: str) -> list[MemberInfo]:
    return (await read(request, store.snapshot)).members


@api.route(
    "POST",
    "/api/v1/members",
    summary="Admit a member",
    body=MemberCreate,
    response=MemberInfo,
    status=201,
    auth=OP,
    errors=(409,),
    tags=("members",),
)
async def create_member(request: web.Request, principal: str, body: MemberCreate) -> MemberInfo:
    return await write(request, lambda s: service.add_member(s, body))


@api.route(
    "GET", M, summary="One member", response=MemberInfo, auth=OP, errors=(404,), tags=("members",)
)
async def read_member(request: web.Request, principal: str) -> MemberInfo:
    return await read(request, lambda s: service.get_member(s, _member(request)))


@api.route(
    "PATCH",
    M,
    summary="Rename or suspend a member",
    body=MemberUpdate,
    response=MemberInfo,
    auth=OP,
    errors=(404,),
    tags=("members",),
)
async def patch_member(request: web.Request, principal: str, body: MemberUpdate) -> MemberInfo:
    return await write(request, lambda s: service.update_member(s, _member(request), body))


@api.route(
    "POST",
    "/api/v1/subsystems",
    summary="Add a subsystem to a member",
    body=SubsystemCreate,
    response=MemberInfo,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("members",),
)
async def create_subsystem(
    request: web.Request, principal: str, body: SubsystemCreate
) -> MemberInfo:
    return await write(request, lambda s: service.add_subsystem(s, body))


@api.route(
    "PATCH",
    M + "/subsystems/{sub}",
    summary="Rename or suspend a subsystem",
    body=SubsystemUpdate,
    response=MemberInfo,
    auth=OP,
    errors=(404,),
    tags=("members",),
)
async def patch_subsystem(
    request: web.Request, principal: str, body: SubsystemUpdate
) -> MemberInfo:
    return await write(request, lambda s: service.update_subsystem(s, _subsystem(request), body))


# --- keys ----------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/api/v1/keys",
    summary="Register a member's public signing key",
    body=KeyCreate,
    response=KeyInfo,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("keys",),
)
async def create_key(request: web.Request, principal: str, body: KeyCreate) -> KeyInfo:
    return await write(request, lambda s: service.add_key(s, body))


@api.route(
    "POST",
    "/api/v1/keys/{kid}/revoke",
    summary="Revoke a signing key at once",
    response=KeyInfo,
    auth=OP,
    errors=(404, 409),
    tags=("keys",),
)
async def revoke_key(request: web.Request, principal: str) -> KeyInfo:
    return await write(request, lambda s: service.revoke_key(s, request.match_info["kid"]))


# --- gateways ------------------------------------------------------------------------------------

G = M + "/gateways/{gw}"


@api.route(
    "GET",
    "/api/v1/gateways",
    summary="All gateways",
    response=list[GatewayInfo],
    auth=OP,
    tags=("gateways",),
)
async def list_gateways(request: web.Request, principal: str) -> list[GatewayInfo]:
    return (await read(request, store.snapshot)).gateways


@api.route(
    "POST",
    "/api/v1/gateways",
    summary="Register a gateway with its TLS pin",
    body=GatewayCreate,
    response=GatewayInfo,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("gateways",),
)
async def create_gateway(request: web.Request, principal: str, body: GatewayCreate) -> GatewayInfo:
    return await write(request, lambda s: service.add_gateway(s, body))


@api.route(
    "PATCH",
    G,
    summary="Change a gateway's address, pin or status",
    body=GatewayUpdate,
    response=GatewayInfo,
    auth=OP,
    errors=(404, 409),
    tags=("gateways",),
)
async def patch_gateway(request: web.Request, principal: str, body: GatewayUpdate) -> GatewayInfo:
    return await write(request, lambda s: service.update_gateway(s, _gateway(request), body))


@api.route(
    "POST",
    G + "/clients",
    summary="Serve a subsystem on this gateway",
    body=ClientRef,
    response=GatewayInfo,
    auth=OP,
    errors=(404, 409),
    tags=("gateways",),
)
async def add_gateway_client(request: web.Request, principal: str, body: ClientRef) -> GatewayInfo:
    return await write(
        request, lambda s: service.add_gateway_client(s, _gateway(request), body.client)
    )


@api.route(
    "DELETE",
    G + "/clients/{client:.+}",
    summary="Stop serving a subsystem here",
    response=GatewayInfo,
    auth=OP,
    errors=(404,),
    tags=("gateways",),
)
async def remove_gateway_client(request: web.Request, principal: str) -> GatewayInfo:
    client = ClientId.parse(request.match_info["client"], require_subsystem=True)
    return await write(
        request, lambda s: service.remove_gateway_client(s, _gateway(request), client)
    )


# --- groups --------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/api/v1/global-groups",
    summary="Global groups",
    response=list[GroupInfo],
    auth=OP,
    tags=("groups",),
)
async def list_global_groups(request: web.Request, principal: str) -> list[GroupInfo]:
    return (await read(request, store.snapshot)).global_groups


@api.route(
    "POST",
    "/api/v1/global-groups",
    summary="Create a global group",
    body=GroupCreate,
    response=GroupInfo,
    status=201,
    auth=OP,
    errors=(409,),
    tags=("groups",),
)
async def create_global_group(request: web.Request, principal: str, body: GroupCreate) -> GroupInfo:
    return await write(request, lambda s: service.add_global_group(s, body))


@api.route(
    "POST",
    "/api/v1/global-groups/{group}/members",
    summary="Add a subsystem",
    body=ClientRef,
    response=GroupInfo,
    auth=OP,
    errors=(404, 409),
    tags=("groups",),
)
async def add_global_group_member(
    request: web.Request, principal: str, body: ClientRef
) -> GroupInfo:
    code = request.match_info["group"]
    return await write(request, lambda s: service.add_global_group_member(s, code, body.client))


@api.route(
    "DELETE",
    "/api/v1/global-groups/{group}/members/{client:.+}",
    summary="Remove a subsystem",
    response=GroupInfo,
    auth=OP,
    errors=(404,),
    tags=("groups",),
)
async def remove_global_group_member(request: web.Request, principal: str) -> GroupInfo:
    code = request.match_info["group"]
    client = ClientId.parse(request.match_info["client"], require_subsystem=True)
    return await write(request, lambda s: service.remove_global_group_member(s, code, client))


LG = M + "/subsystems/{sub}/local-groups/{group}"


@api.route(
    "GET",
    "/api/v1/local-groups",
    summary="Local groups of all subsystems",
    response=list[LocalGroupInfo],
    auth=OP,
    tags=("groups",),
)
async def list_local_groups(request: web.Request, principal: str) -> list[LocalGroupInfo]:
    return (await read(request, store.snapshot)).local_groups


@api.route(
    "POST",
    "/api/v1/local-groups",
    summary="Create a provider's local group",
    body=LocalGroupCreate,
    response=LocalGroupInfo,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("groups",),
)
async def create_local_group(
    request: web.Request, principal: str, body: LocalGroupCreate
) -> LocalGroupInfo:
    return await write(request, lambda s: service.add_local_group(s, body))


@api.route(
    "POST",
    LG + "/members",
    summary="Add a subsystem to a local group",
    body=ClientRef,
    response=LocalGroupInfo,
    auth=OP,
    errors=(404, 409),
    tags=("groups",),
)
async def add_local_group_member(
    request: web.Request, principal: str, body: ClientRef
) -> LocalGroupInfo:
    owner, code = _subsystem(request), request.match_info["group"]
    return await write(
        request, lambda s: service.add_local_group_member(s, owner, code, body.client)
    )


@api.route(
    "DELETE",
    LG + "/members/{client:.+}",
    summary="Remove a subsystem from a local group",
    response=LocalGroupInfo,
    auth=OP,
    errors=(404,),
    tags=("groups",),
)
async def remove_local_group_member(request: web.Request, principal: str) -> LocalGroupInfo:
    owner, code = _subsystem(request), request.match_info["group"]
    client = ClientId.parse(request.match_info["client"], require_subsystem=True)
    return await write(request, lambda s: service.remove_local_group_member(s, owner, code, client))


# --- purposes and services -----------------------------------------------------------------------


@api.route(
    "GET",
    "/api/v1/purposes",
    summary="The purposes catalogue",
    response=list[PurposeInfo],
    auth=OP,
    tags=("services",),
)
async def list_purposes(request: web.Request, principal: str) -> list[PurposeInfo]:
    return (await read(request, store.snapshot)).purposes


@api.route(
    "POST",
    "/api/v1/purposes",
    summary="Add a purpose to the catalogue",
    body=PurposeCreate,
    response=PurposeInfo,
    status=201,
    auth=OP,
    errors=(409,),
    tags=("services",),
)
async def create_purpose(request: web.Request, principal: str, body: PurposeCreate) -> PurposeInfo:
    return await write(request, lambda s: service.add_purpose(s, body))


S = M + "/subsystems/{sub}/services/{service}"


@api.route(
    "GET",
    "/api/v1/services",
    summary="All services",
    response=list[ServiceInfo],
    auth=OP,
    tags=("services",),
)
async def list_services(request: web.Request, principal: str) -> list[ServiceInfo]:
    return (await read(request, store.snapshot)).services


@api.route(
    "POST",
    "/api/v1/services",
    summary="Register a service",
    body=ServiceCreate,
    response=ServiceInfo,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("services",),
)
async def create_service(request: web.Request, principal: str, body: ServiceCreate) -> ServiceInfo:
    return await write(request, lambda s: service.add_service(s, body))


async def _patch_service(request: web.Request, body: ServiceUpdate) -> ServiceInfo:
    return await write(request, lambda s: service.update_service(s, _service(request), body))


@api.route(
    "PATCH",
    S,
    summary="Change an unversioned service",
    body=ServiceUpdate,
    response=ServiceInfo,
    auth=OP,
    errors=(404,),
    tags=("services",),
)
async def patch_service(request: web.Request, principal: str, body: ServiceUpdate) -> ServiceInfo:
    return await _patch_service(request, body)


@api.route(
    "PATCH",
    S + "/{version}",
    summary="Change a versioned service",
    body=ServiceUpdate,
    response=ServiceInfo,
    auth=OP,
    errors=(404,),
    tags=("services",),
)
async def patch_service_version(
    request: web.Request, principal: str, body: ServiceUpdate
) -> ServiceInfo:
    return await _patch_service(request, body)


# --- access rights -------------------------------------------------------------------------------


@api.route(
    "GET",
    "/api/v1/access-rights",
    summary="All access rights",
    response=list[AccessRightView],
    auth=OP,
    tags=("access rights",),
)
async def list_access_rights(request: web.Request, principal: str) -> list[AccessRightView]:
    return (await read(request, store.snapshot)).access_rights


@api.route(
    "POST",
    "/api/v1/access-rights",
    summary="Grant access to a service or endpoint",
    body=AccessRightCreate,
    response=AccessRightView,
    status=201,
    auth=OP,
    errors=(404, 409),
    tags=("access rights",),
)
async def create_access_right(
    request: web.Request, principal: str, body: AccessRightCreate
) -> AccessRightView:
    return await write(request, lambda s: service.grant(s, body))


@api.route(
    "DELETE",
    "/api/v1/access-rights/{id}",
    summary="Withdraw an access right",
    status=204,
    auth=OP,
    errors=(404,),
    tags=("access rights",),
)
async def delete_access_right(request: web.Request, principal: str) -> web.StreamResponse:
    raw = request.match_info["id"]
    right = path_id(raw)
    if right is None:
        raise NotFoundError(f"no access right with id {raw!r}")
    await write(request, lambda s: service.revoke_access(s, right))
    return web.Response(status=204)


# --- central services ----------------------------------------------------------------------------


class _CentralList(BaseModel):
    services: list[CentralServiceInfo]


@api.route(
    "GET",
    "/api/v1/central-services",
    summary="Central services and their keys",
    response=_CentralList,
    auth=OP,
    tags=("federation",),
)
async def list_central_services(request: web.Request, principal: str) -> _CentralList:
    return _CentralList(services=(await read(request, store.snapshot)).central_services)


@api.route(
    "PUT",
    "/api/v1/central-services/{name}",
    summary="Set a central service's URL and keys",
    body=CentralServiceSet,
    response=CentralServiceInfo,
    auth=OP,
    tags=("federation",),
)
async def put_central_service(
    request: web.Request, principal: str, body: CentralServiceSet
) -> CentralServiceInfo:
    name = request.match_info["name"]
    parse_model(
        CentralServiceInfo, {"name": name, "url": body.url, "keys": body.keys}, where="path"
    )
    return await write(request, lambda s: service.set_central_service(s, name, body))
