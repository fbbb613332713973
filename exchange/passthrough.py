"""The provider gateway's pass-through to a REST backend (an ``adapters.base.Backend``).

Redirects are passed back, never followed (PR-REST 4.4); bodies are bounded;
every call has a timeout; hop-by-hop headers never cross. Refusals name the
service, never the backend's URL: they reach the consumer and the log.
"""

from __future__ import annotations

import ssl

import aiohttp
from yarl import URL

from adapters.base import BackendRequest, BackendResponse
from core.errors import ServiceFailedError
from core.web import never_twice, read_up_to
from exchange.envelope import HEADER_FIELD_SIZE
from exchange.errors import ProviderNetworkError
from exchange.r1 import forwardable_headers

__all__ = ["HttpBackend"]


class HttpBackend:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_body: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ssl_context = ssl_context  # for an https:// backend; None: the system's defaults
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_body = max_body
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ssl=self.ssl_context or True),
                # Never let the backend's cookies leak from one caller to the next.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                max_field_size=HEADER_FIELD_SIZE,
            )
            never_twice(self._session)
        return self._session

    async def call(self, request: BackendRequest) -> BackendResponse:
        url = self.base_url + request.path + (f"?{request.query}" if request.query else "")
        headers = {
            **{k: v for k, v in request.headers.items() if k.lower() != "accept-encoding"},
            "X-Road-Client": str(request.client),
            "X-Road-Service": str(request.service),
            "X-Road-Id": request.message_id,
            # Bodies are validated and projected as JSON: ask for them uncompressed.
            "Accept-Encoding": "identity",
        }
        try:
            async with self._http().request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=request.body or None,
                allow_redirects=False,
                timeout=self.timeout,
            ) as resp:
                if (resp.content_length or 0) > self.max_body:
                    raise ServiceFailedError(
                        f"backend response is larger than {self.max_body} bytes"
                    )
                body = await read_up_to(resp.content, self.max_body + 1)
                if len(body) > self.max_body:
                    raise ServiceFailedError(
                        f"backend response is larger than {self.max_body} bytes"
                    )
                return BackendResponse(resp.status, forwardable_headers(resp.headers), body)
        except TimeoutError as e:
            raise ProviderNetworkError(
                f"the backend of {request.service} did not answer within {self.timeout.total} s"
            ) from e
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as e:
            # It answered, but not in HTTP this client reads (a broken status line, too many
            # or too long headers, a truncated body): the backend failed, not the network.
            raise ServiceFailedError(
                f"the backend of {request.service} answered malformed HTTP: {type(e).__name__}"
            ) from e
        except aiohttp.ClientError as e:
            raise ProviderNetworkError(
                f"the backend of {request.service} is unreachable: {type(e).__name__}"
            ) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
