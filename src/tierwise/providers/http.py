"""What the HTTP providers share: one pooled aiohttp session, error mapping, and server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from tierwise.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeout
from tierwise.providers.base import Provider

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            import time

            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def error_from_status(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    detail = body[:300].decode("utf-8", "replace").strip()
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            detail = str(err["message"])
    except orjson.JSONDecodeError:
        pass
    return UpstreamError(
        f"HTTP {status}: {detail}" if detail else f"HTTP {status}",
        status=status,
        retryable=status in RETRYABLE_STATUS,
        retry_after=parse_retry_after(headers),
    )


class HTTPProvider(Provider):
    """A provider that talks HTTP through one keep-alive connection pool, created on first use."""

    def __init__(self, name: str, base_url: str) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            # No cookie jar: a cookie one client's request brought back must not go out with another's.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> aiohttp.ClientResponse:
        """POST JSON; return the open response once its status is 2xx, or raise the mapped UpstreamError."""
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
            self._timeouts[timeout] = client_timeout
        try:
            response = await self.session.post(
                self.base_url + path,
                data=orjson.dumps(body),
                headers={"content-type": "application/json", **headers},
                timeout=client_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"no response within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(f"connection failed: {exc.__class__.__name__}: {exc}") from None
        if response.status >= 400:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                response.release()
            raise error_from_status(response.status, raw, response.headers)
        return response

    async def post_json(
        self, path: str, body: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> Any:
        response = await self.post(path, body, headers, timeout)
        try:
            raw = await response.read()
        except TimeoutError:
            raise UpstreamTimeout(f"no complete response within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(f"connection broke: {exc.__class__.__name__}: {exc}") from None
        finally:
            response.release()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"malformed JSON from upstream: {raw[:120].decode('utf-8', 'replace')!r}", retryable=True
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, bytes]]:
    """(event name, data) pairs of a server-sent event stream; maps transport failures to UpstreamError."""
    event: str | None = None
    data: list[bytes] = []
    try:
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data = None, []
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"data":
                data.append(value)
            elif field == b"event":
                event = value.decode("utf-8", "replace")
        if data:
            yield event, b"\n".join(data)
    except TimeoutError:
        raise UpstreamTimeout("the stream stalled") from None
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(f"the stream broke: {exc.__class__.__name__}: {exc}") from None
