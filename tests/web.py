"""Driving the web consoles over HTTP, without a browser, for fast page tests.

:class:`PageClient` keeps the console's cookies itself (aiohttp's jar will not
send ``Secure`` cookies to ``http://127.0.0.1``), follows redirects by hand so
cookies set on the way are kept, sends the ``Origin`` a browser would, and
fills in a form's CSRF token from the page the form is on. :func:`raw_status` sends the
bytes of a request no HTTP client library would send (headers that are not UTF-8).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import urljoin

import aiohttp

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
MAX_PAGE = 100 * 1024  # bytes: the bound for every page


@dataclass
class Fetched:
    status: int
    url: str
    text: str
    headers: Mapping[str, str]
    redirects: list[str] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        match = CSRF.search(self.text)
        assert match, f"no CSRF token on {self.url}"
        return match.group(1)

    @property
    def visible(self) -> str:
        """The page's text as a reader sees it (tags dropped, whitespace collapsed)."""
        return visible_text(self.text)

    @property
    def dir(self) -> str | None:
        match = re.search(r'<html lang="(\w+)" dir="(\w+)"', self.text)
        return match.group(2) if match else None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


class PageClient:
    """One browser-like visitor of a console at ``base`` (``http://host:port``)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, *, lang: str | None = None) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.cookies: dict[str, str] = {}
        if lang:
            self.cookies["shahrah-lang"] = lang

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept-Language": "en"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.update(extra or {})
        return headers

    def _keep(self, response: aiohttp.ClientResponse) -> None:
        for value in response.headers.getall("Set-Cookie", []):
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        follow: bool = True,
    ) -> Fetched:
        url = urljoin(self.base + "/", path.lstrip("/")) if not path.startswith("http") else path
        redirects: list[str] = []
        while True:
            async with self.http.request(
                method, url, data=data, headers=self._headers(headers), allow_redirects=False
            ) as r:
                self._keep(r)
                text = await r.text()
                if follow and r.status in (301, 302, 303, 307) and len(redirects) < 10:
                    url = urljoin(url, r.headers["Location"])
                    redirects.append(url)
                    method, data, headers = "GET", None, None
                    continue
                return Fetched(r.status, str(r.url), text, dict(r.headers), redirects)

    async def get(self, path: str, **kw: object) -> Fetched:
        return await self.request("GET", path, **kw)  # type: ignore[arg-type]

    async def post(
        self, path: str, data: Mapping[str, str], *, origin: str | None = "", follow: bool = True
    ) -> Fetched:
        """POST a form; ``origin=None`` sends no Origin, ``""`` the console's own."""
        headers = {} if origin is None else {"Origin": origin or self.base}
        return await self.request("POST", path, data=data, headers=headers, follow=follow)

    async def submit(self, path: str, /, *, form_page: str | None = None, **fields: str) -> Fetched:
        """Open the page holding the form (``form_page``, else ``path``) and submit it."""
        page = await self.get(form_page or path)
        return await self.post(path, {"csrf": page.csrf, **fields})


async def raw_status(base: str, path: str, headers: bytes) -> int:
    """The status answered to ``GET path`` with ``headers`` (raw ``Name: value\\r\\n`` lines)
    sent byte for byte over a fresh connection to ``base`` (``http://host:port``)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            + headers
            + b"\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])
