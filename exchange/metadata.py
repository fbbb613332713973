"""X-Road's REST metaservices (PR-MREST) answered from the global configuration.

``listClients`` is served by any gateway to its local systems;
``listMethods``, ``allowedMethods`` and ``getOpenAPI`` are called like any
service on a provider subsystem and answered by the provider's gateway.
A service's endpoints are the method/path patterns of its access rights; its
OpenAPI description is generated from the registry's view of it (title,
endpoints, schema references).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree as ET

from core.errors import BadRequestError, UnknownServiceError
from core.ids import ClientId, ServiceId
from exchange.envelope import RequestEnvelope
from registry.globalconf import GlobalConfView

__all__ = ["CONTENT_TYPE", "XML_TYPE", "answer_metaservice", "client_list_xml", "list_clients"]

#: What the answers are: made by the gateway itself, so they name their character encoding
#: (PR-REST 4.3).
CONTENT_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"

# PR-META's namespaces: the message elements' and the identifiers'.
_XROAD = "http://x-road.eu/xsd/xroad.xsd"
_ID = "http://x-road.eu/xsd/identifiers"


def list_clients(view: GlobalConfView, instance: str | None = None) -> dict[str, Any]:
    """``GET /listClients``: every member and subsystem, in PR-META's JSON form."""
    members = []
    for client in view.clients():
        if instance is not None and client.instance != instance:
            continue
        member = view.members[client.member]
        ident: dict[str, str] = {
            "member_class": client.member_class,
            "member_code": client.member_code,
            "object_type": "SUBSYSTEM" if client.subsystem else "MEMBER",
            "xroad_instance": client.instance,
        }
        entry: dict[str, Any] = {"id": ident, "name": member.name}
        if client.subsystem:
            ident["subsystem_code"] = client.subsystem
            named = next((s.name for s in member.subsystems if s.code == client.subsystem), "")
            if named:
                entry["subsystem_name"] = named
        members.append(entry)
    return {"member": members}


def client_list_xml(clients: dict[str, Any]) -> bytes:
    """:func:`list_clients`'s answer as PR-META's ``clientList`` element, the form X-Road
    answers in unless JSON is asked for."""
    root = ET.Element(f"{{{_XROAD}}}clientList")
    fields = [
        ("xroad_instance", "xRoadInstance"),
        ("member_class", "memberClass"),
        ("member_code", "memberCode"),
        ("subsystem_code", "subsystemCode"),
    ]
    for member in clients["member"]:
        ident = member["id"]
        entry = ET.SubElement(root, f"{{{_XROAD}}}member")
        id_ = ET.SubElement(
            entry, f"{{{_XROAD}}}id", {f"{{{_ID}}}objectType": ident["object_type"]}
        )
        for key, tag in fields:
            if key in ident:
                ET.SubElement(id_, f"{{{_ID}}}{tag}").text = ident[key]
        ET.SubElement(entry, f"{{{_XROAD}}}name").text = member["name"]
        if "subsystem_name" in member:
            ET.SubElement(entry, f"{{{_XROAD}}}subsystemName").text = member["subsystem_name"]
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _service_entry(
    view: GlobalConfView, sid: ServiceId, endpoints: list[dict[str, str]]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "object_type": "SERVICE",
        "xroad_instance": sid.instance,
        "member_class": sid.member_class,
        "member_code": sid.member_code,
        "subsystem_code": sid.subsystem,
        "service_code": sid.service_code,
        "service_type": "REST",
        "endpoint_list": endpoints,
    }
    if sid.version is not None:
        entry["service_version"] = sid.version
    return entry


def _endpoints(
    view: GlobalConfView, sid: ServiceId, client: ClientId | None
) -> list[dict[str, str]]:
    """The service's endpoint patterns; only those granted to ``client`` when one is given."""
    seen: dict[tuple[str, str], None] = {}
    for right in view.conf.access_rights:
        if right.service == sid and (client is None or view.grants(right, client, sid)):
            seen[(right.method, right.path)] = None
    return [{"method": m, "path": p} for m, p in seen]


def answer_metaservice(view: GlobalConfView, env: RequestEnvelope) -> bytes:
    """The JSON body for a listMethods, allowedMethods or getOpenAPI call."""
    provider = env.service.provider
    code = env.service.service_code
    if code in ("listMethods", "allowedMethods"):
        caller = env.client if code == "allowedMethods" else None
        services = []
        for sid in view.versions_of(provider):
            if view.services[sid].status != "active":
                continue
            endpoints = _endpoints(view, sid, caller)
            if caller is not None and not endpoints:
                continue
            services.append(_service_entry(view, sid, endpoints))
        return json.dumps({"service": services}).encode()
    # As X-Road reads it: the parameter's name in any case, the last one given.
    named = [v for k, v in parse_qsl(env.query) if k.lower() == "servicecode"]
    wanted = named[-1] if named else None
    if not wanted:
        raise BadRequestError("getOpenAPI needs the query parameter serviceCode")
    candidates = [sid for sid in view.versions_of(provider) if sid.service_code == wanted]
    if not candidates:
        raise UnknownServiceError(f"service {provider}/{wanted} is not registered")
    return json.dumps(openapi_for(view, candidates)).encode()


def _templated(prefix: str, pattern: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """An access right's path pattern as OpenAPI path templates with their parameters: each
    ``*`` one segment, a trailing ``**`` whatever follows, nothing included (so two paths:
    without it, and with a parameter for the rest). A literal brace, which would read as a
    template, stands percent-encoded, as a request would send it."""
    segments = ["**"] if pattern == "**" else pattern[1:].split("/")
    parts: list[str] = []
    parameters: list[dict[str, Any]] = []
    for seg in segments:
        if seg == "**":
            rest = _parameter("rest", "the rest of the path, one or more segments")
            # "**" also matches nothing: the path may end before it.
            return [
                (prefix + "".join("/" + p for p in parts) or "/", parameters),
                (prefix + "".join("/" + p for p in [*parts, "{rest}"]), [*parameters, rest]),
            ]
        if seg == "*":
            name = f"segment{len(parameters) + 1}"
            parts.append("{" + name + "}")
            parameters.append(_parameter(name, "one segment"))
        else:
            parts.append(seg.replace("{", "%7B").replace("}", "%7D"))
    return [(prefix + "/" + "/".join(parts), parameters)]


def _parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def openapi_for(view: GlobalConfView, services: list[ServiceId]) -> dict[str, Any]:
    """An OpenAPI 3.1 description of a service's versions, built from the configuration."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for sid in services:
        info = view.services[sid]
        prefix = f"/{sid.version}" if sid.version else ""
        endpoints = _endpoints(view, sid, None)
        for ep, (path, parameters) in (
            (e, t) for e in endpoints for t in _templated(prefix, e["path"])
        ):
            methods = (
                ["get", "post", "put", "patch", "delete"]
                if ep["method"] == "*"
                else [ep["method"].lower()]
            )
            item = paths.setdefault(path, {})
            if parameters:
                item["parameters"] = parameters
            for method in methods:
                op: dict[str, Any] = {
                    "summary": info.title,
                    "responses": {"200": {"description": "success"}},
                }
                if info.response_schema is not None:
                    ref = f"{info.response_schema.subject}.v{info.response_schema.version}"
                    schemas[ref] = {
                        "description": f"schema registry subject {info.response_schema.subject}, "
                        f"version {info.response_schema.version}"
                    }
                    op["responses"]["200"]["content"] = {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}
                    }
                item[method] = op
    first = view.services[services[0]]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": first.title,
            "version": services[0].version or "1",
            "description": first.description,
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
