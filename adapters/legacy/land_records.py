"""Punjab's land records as the demo's SOAP service (SOAP 1.1 and 1.2 on one endpoint).

``POST /LandRecordsService`` answers the operation ``GetParcel`` (namespace
:data:`NS`) with the parcel's record: attributes (``id``, ``cnic``,
``share``, ``kanal``...), repeated elements (khasra numbers, owners) and
names in English and Urdu. An unknown parcel is a Client/Sender fault whose
detail is ``lr:ParcelNotFound``; a malformed request is a Client/Sender
fault too. The version is chosen by the request's media type, as SOAP's
HTTP bindings say: ``text/xml`` for 1.1, ``application/soap+xml`` for 1.2.
The request is parsed with the same hardened parser the adapters use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.soap import SOAP11, SOAP12
from adapters.xmlsafe import XmlError, escape, parse_xml

__all__ = ["NS", "PATH", "land_records_app"]

NS = "urn:pk:punjab:plra:landrecords:v1"
PATH = "/LandRecordsService"
PARCELS = web.AppKey("parcels", dict)
_PARCEL_ID = re.compile(r"PB-[A-Z]{3}-[0-9]{4}-[0-9]{5}")


def _envelope(ns: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{ns}" xmlns:lr="{NS}">'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )


def _fault(ns: str, sender: bool, reason: str, detail: str) -> web.Response:
    if ns == SOAP11:
        body = (
            f"<soap:Fault><faultcode>soap:{'Client' if sender else 'Server'}</faultcode>"
            f"<faultstring>{escape(reason)}</faultstring>"
            f"<detail><lr:{detail}/></detail></soap:Fault>"
        )
        ctype = "text/xml"
    else:
        body = (
            f"<soap:Fault><soap:Code><soap:Value>soap:{'Sender' if sender else 'Receiver'}"
            "</soap:Value>"
            f"<soap:Subcode><soap:Value>lr:{detail}</soap:Value></soap:Subcode></soap:Code>"
            f'<soap:Reason><soap:Text xml:lang="en">{escape(reason)}</soap:Text></soap:Reason>'
            f"<soap:Detail><lr:{detail}/></soap:Detail></soap:Fault>"
        )
        ctype = "application/soap+xml"
    # SOAP 1.2 answers Sender faults with 400; SOAP 1.1 answers every fault with 500.
    status = 400 if sender and ns == SOAP12 else 500
    return web.Response(
        status=status, text=_envelope(ns, body), content_type=ctype, charset="utf-8"
    )


def _parcel_xml(p: dict[str, Any]) -> str:
    e = escape
    khasras = "".join(f"<lr:KhasraNo>{e(k)}</lr:KhasraNo>" for k in p["khasras"])
    owners = "".join(
        f'<lr:Owner cnic="{e(o["cnic"])}" share="{e(o["share"])}">'
        f"<lr:Name>{e(o['name'])}</lr:Name><lr:NameUrdu>{e(o['name_ur'])}</lr:NameUrdu></lr:Owner>"
        for o in p["owners"]
    )
    mutations = "".join(
        f'<lr:Mutation no="{e(m["number"])}" date="{e(m["date"])}" type="{e(m["kind"])}"/>'
        for m in p["mutations"]
    )
    return (
        f'<lr:GetParcelResponse><lr:Parcel id="{e(p["id"])}" district="{e(p["district"])}" '
        f'tehsil="{e(p["tehsil"])}" asOf="{e(p["as_of"])}">'
        f'<lr:Mauza code="{e(p["mauza_code"])}">{e(p["mauza"])}</lr:Mauza>'
        f"<lr:KhewatNo>{e(p['khewat'])}</lr:KhewatNo><lr:KhatooniNo>{e(p['khatooni'])}</lr:KhatooniNo>"
        f"<lr:KhasraNos>{khasras}</lr:KhasraNos>"
        f'<lr:Area kanal="{p["kanal"]}" marla="{p["marla"]}"/><lr:Owners>{owners}</lr:Owners>'
        f"<lr:Mutations>{mutations}</lr:Mutations>"
        "</lr:Parcel></lr:GetParcelResponse>"
    )


async def _service(request: web.Request) -> web.Response:
    ctype = request.content_type
    ns = SOAP12 if ctype == "application/soap+xml" else SOAP11
    if ctype not in ("text/xml", "application/soap+xml"):
        return _fault(
            SOAP11,
            True,
            "send text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)",
            "BadRequest",
        )
    try:
        root = parse_xml(await request.read())
    except XmlError as e:
        return _fault(ns, True, f"the request is refused: {e}", "BadRequest")
    if root.tag != f"{{{ns}}}Envelope":
        return _fault(ns, True, "the envelope's SOAP version does not match", "VersionMismatch")
    call = root.find(f"{{{ns}}}Body/{{{NS}}}GetParcel")
    if call is None:
        return _fault(
            ns, True, "unknown operation; this service offers GetParcel", "UnknownOperation"
        )
    parcel_id = (call.findtext(f"{{{NS}}}ParcelId") or "").strip()
    if _PARCEL_ID.fullmatch(parcel_id) is None:
        return _fault(ns, True, "ParcelId must look like PB-LHR-0142-00378", "InvalidParcelId")
    parcel = request.app[PARCELS].get(parcel_id)
    if parcel is None:
        return _fault(ns, True, f"no parcel {parcel_id}", "ParcelNotFound")
    media = "text/xml" if ns == SOAP11 else "application/soap+xml"
    return web.Response(
        text=_envelope(ns, _parcel_xml(parcel)), content_type=media, charset="utf-8"
    )


def land_records_app(data: Path) -> web.Application:
    """The SOAP service over the parcels in ``data`` (``land-records.json`` made by build())."""
    parcels = json.loads(data.read_text("utf-8"))
    app = web.Application(client_max_size=64 * 2**10)
    app[PARCELS] = {p["id"]: p for p in parcels}
    app.router.add_post(PATH, _service)
    return app
