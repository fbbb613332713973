"""A gateway's configuration file (``gateway.toml``), validated with precise errors.

Relative paths are resolved against the file's folder, so a gateway's data
directory can move as a whole.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import BadRequestError
from core.fields import ClientIdField, GatewayIdField, ServiceIdField

__all__ = [
    "BackendSettings",
    "ClientSettings",
    "GatewayConfig",
    "LimitSettings",
    "Listener",
    "LocalListener",
    "check_host",
    "https_address",
]

# Strict: TOML has numbers, so a quoted "30" or a `true` where a number belongs is a
# mistake to name, not a value to guess at; and no timeout is NaN or infinite.
Port = Annotated[int, Field(ge=0, le=65535, strict=True)]
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def check_host(value: str) -> str:
    """An IP address or a DNS host name, as a listener binds and a URL names it; anything
    else (a quote, a space, a scheme or port) is refused rather than written into the
    configuration or the address the registry publishes."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _HOSTNAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an IP address or a host name") from None
    return value


def https_address(host: str, port: int) -> str:
    """The ``https://`` URL of a listener on ``host``:``port`` (an IPv6 address bracketed)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Section):
    host: Annotated[str, AfterValidator(check_host)] = "127.0.0.1"
    port: Port


class LocalListener(Listener):
    """Where local systems call the gateway: plain HTTP (for a listener only they can reach,
    as the default 127.0.0.1 is), or with ``tls = true`` HTTPS only, each client subsystem
    connecting as its ``[clients]`` entry says."""

    tls: bool = False
    certificate: Path | None = Field(None, description="default: the gateway's TLS certificate")
    key: Path | None = Field(None, description="default: the gateway's TLS key")


class ClientSettings(_Section):
    """How one client subsystem's information systems connect (X-Road's connection types):
    ``HTTPS`` presenting one of ``certificates`` (the default once the listener has TLS), or
    ``HTTPS_NO_AUTH``, over TLS without a certificate, the X-Road-Client header its only
    claim."""

    connection: Literal["HTTPS", "HTTPS_NO_AUTH"] = "HTTPS"
    certificates: list[Path] = Field([], description="PEM files of the systems' certificates")

    @model_validator(mode="after")
    def _authenticated_needs_certificates(self) -> ClientSettings:
        if self.connection == "HTTPS" and not self.certificates:
            raise ValueError("connection HTTPS needs the certificates its systems present")
        return self


class LimitSettings(_Section):
    max_body: Annotated[int, Field(strict=True)] = Field(
        10 * 2**20, ge=1024, description="bytes, request and response bodies"
    )
    backend_timeout: Seconds = Field(
        30.0, gt=0, le=600, description="seconds for a backend to answer"
    )
    peer_timeout: Seconds = Field(
        60.0, gt=0, le=900, description="seconds to wait for a provider gateway"
    )
    connect_timeout: Seconds = Field(5.0, gt=0, le=60, description="seconds to open a connection")
    body_timeout: Seconds = Field(
        30.0, gt=0, le=900, description="seconds for a request body to arrive"
    )
    freshness: Seconds = Field(
        120.0, ge=5, le=3600, description="seconds an envelope's time may be off"
    )


class BackendSettings(_Section):
    """Where a service this gateway provides is answered: a REST URL. Over HTTPS the gateway
    presents its local listener's certificate, and trusts the backend's certificate if it
    is one of ``certificates`` or, with none listed, as the system's CAs vouch for it."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)]
    certificates: list[Path] = Field([], description="PEM files of the backend's certificates")

    @model_validator(mode="after")
    def _no_credentials_in_the_url(self) -> BackendSettings:
        authority = self.url.split("://", 1)[1].split("/", 1)[0]
        if "@" in authority:
            # A URL is printed and logged as a matter of course; a password in it would be.
            raise ValueError("the url must not hold a user name or password")
        return self

    @model_validator(mode="after")
    def _pins_need_https(self) -> BackendSettings:
        if self.certificates and not self.url.startswith("https://"):
            raise ValueError("certificates pin an HTTPS backend: the url is not https://")
        return self


class GatewayConfig(_Section):
    id: GatewayIdField
    anchor: Path = Path("anchor.json")
    database: str = Field("", description="database URL; default: gateway.db beside this file")
    signing_key: Path = Path("signing-key.pem")
    tls_certificate: Path = Path("tls-cert.pem")
    tls_key: Path = Path("tls-key.pem")
    globalconf_cache: Path = Path("globalconf.jws")
    local: LocalListener = LocalListener(port=8080)
    remote: Listener = Listener(port=8443)
    limits: LimitSettings = LimitSettings()
    services: dict[ServiceIdField, BackendSettings] = {}
    clients: dict[ClientIdField, ClientSettings] = Field(
        {}, description="how each client subsystem connects to the local listener (TLS only)"
    )
    adapters: list[Path] = Field([], description="adapter configurations loaded in-process")
    adapter_variables: dict[str, str] = Field(
        {}, description="${NAME} values for the adapter configurations (beside the environment)"
    )
    schema_registry: str = Field("", description="registry base URL; default: from the anchor")

    @model_validator(mode="after")
    def _clients_need_tls(self) -> GatewayConfig:
        if self.clients and not self.local.tls:
            raise ValueError("[clients] sets how clients connect over TLS: set [local] tls = true")
        return self

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            raw = tomllib.loads(path.read_text("utf-8"))
        except OSError as e:
            raise BadRequestError(f"cannot read {path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise BadRequestError(f"{path}: not UTF-8 text (byte {e.start})") from e
        except tomllib.TOMLDecodeError as e:
            raise BadRequestError(f"{path}: {e}") from e
        try:
            config = cls.model_validate(raw)
        except ValidationError as e:
            # Every problem at once: an operator fixing the file should not find them one a run.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise BadRequestError(f"{path}: {problems}") from e
        base = path.parent.resolve()
        database = config.database or f"sqlite:///{base / 'gateway.db'}"
        return config.model_copy(
            update={
                "anchor": base / config.anchor,
                "signing_key": base / config.signing_key,
                "tls_certificate": base / config.tls_certificate,
                "tls_key": base / config.tls_key,
                "local": config.local.model_copy(
                    update={
                        "certificate": base / (config.local.certificate or config.tls_certificate),
                        "key": base / (config.local.key or config.tls_key),
                    }
                ),
                "services": _certificates_under(base, config.services),
                "clients": _certificates_under(base, config.clients),
                "globalconf_cache": base / config.globalconf_cache,
                "adapters": [base / a for a in config.adapters],
                "database": database,
            }
        )


_S = TypeVar("_S", BackendSettings, ClientSettings)
_K = TypeVar("_K")


def _certificates_under(base: Path, sections: dict[_K, _S]) -> dict[_K, _S]:
    """``sections`` with their certificate files' paths resolved against ``base``."""
    return {
        key: settings.model_copy(update={"certificates": [base / c for c in settings.certificates]})
        for key, settings in sections.items()
    }
