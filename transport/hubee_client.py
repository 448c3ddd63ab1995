"""The HubEE API as both sides call it: one HTTP client, bearer tokens, and one mapping of failures to errors.

The CNAF's delivery adapter (transport/hubee.py, scope OSL) and a département's drop reader
(receive/drops.py, scope SI) speak to the same API with the same headers, the same token dance
and the same error body. What an answer means for the caller (a folder made, a case read) stays
with each caller; how a call is made and how a refusal or a silence becomes a TransportError
lives here, once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ..core.errors import TransportError
from .oauth2 import OAuth2Client, no_answer_kind
from .retry import NO_RETRY, RetryPolicy

MAX_ERROR_CHARS = 200
_SPACES = re.compile(r"\s+")
# Connection failures where the request never left: sending it again cannot duplicate anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class NoAnswer(TransportError):
    """HubEE did not answer. `sent` is False when the request provably never left this machine."""

    def __init__(self, partner: str, reason: str, *, sent: bool):
        super().__init__(partner, reason)
        self.sent = sent


def error_detail(response: httpx.Response) -> str:
    """The code and message of the spec's Error body, single-line and capped; never our request."""
    try:
        body = json.loads(response.content[: 64 * 1024])
    except ValueError:
        return ""
    first: Any = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
    elif isinstance(body, dict) and "error" in body:  # OAuth2 token endpoint: {"error": "invalid_client"}
        first = {"code": body.get("error"), "message": body.get("error_description") or ""}
    if not isinstance(first, dict):
        return ""
    code = str(first.get("code", "")).strip()
    message = _SPACES.sub(" ", "".join(c for c in str(first.get("message", "")) if c.isprintable())).strip()
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return ": ".join(p for p in (code, message) if p)


def is_permanent(status: int) -> bool:
    # 404 may be the gateway's, 408/429/5xx are HubEE's passing trouble: retried. Any other 4xx
    # (400 validation, 401 after a fresh token, 403 scope or subscription) will not cure itself.
    return 400 <= status < 500 and status not in (404, 408, 429)


class HubeeApi:
    """One httpx client for one side's calls; `partner` names the département in errors."""

    def __init__(
        self,
        *,
        api_url: str,
        timeout: float,
        headers: Mapping[str, str],
        partner: str,
        http_transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy = NO_RETRY,
    ):
        self.api_url = api_url.rstrip("/")
        self.partner = partner
        self.retry = retry
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=dict(headers),
            follow_redirects=False,  # a redirect would carry the bearer token somewhere unplanned
            transport=http_transport,
        )

    def call(
        self, oauth: OAuth2Client, method: str, path: str, *, stream: bool = False, **kw: Any
    ) -> httpx.Response:
        """One API call with the client's token (renewed once on a 401); a silence is NoAnswer.

        A call that provably never left (connection refused) is tried again under the retry policy:
        that cannot duplicate anything, whatever the method. With stream, the caller reads and closes
        the answer.
        """
        return self.retry.call(
            lambda: self._call_once(oauth, method, path, stream=stream, **kw),
            lambda exc: isinstance(exc, NoAnswer) and not exc.sent,
        )

    def _call_once(
        self, oauth: OAuth2Client, method: str, path: str, *, stream: bool, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {})

        def send(token: str) -> httpx.Response:
            request = self.http.build_request(
                method, self.api_url + path, headers={**headers, "Authorization": f"Bearer {token}"}, **kw
            )
            return self.http.send(request, stream=stream)

        try:
            return oauth.authorized(send)
        except httpx.HTTPError as exc:
            raise NoAnswer(
                self.partner,
                f"HubEE {method} {path}: no answer ({no_answer_kind(exc)})",
                sent=not isinstance(exc, _NOT_SENT),
            ) from None

    def failure(self, r: httpx.Response, what: str) -> TransportError:
        """The error an unexpected status makes, permanent or retried."""
        permanent = is_permanent(r.status_code)
        detail = error_detail(r)
        return TransportError(
            self.partner,
            f"HubEE {what}: HTTP {r.status_code}"
            + (f" ({detail})" if detail else "")
            + (", not retried" if permanent else ""),
            permanent=permanent,
        )

    def expect(self, r: httpx.Response, what: str, *ok: int) -> httpx.Response:
        if r.status_code not in ok:
            raise self.failure(r, what)
        return r

    def json(self, r: httpx.Response, what: str, kind: type = dict) -> Any:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, kind):
            raise TransportError(
                self.partner, f"HubEE {what}: HTTP {r.status_code} without the expected JSON"
            )
        return body

    def close(self) -> None:
        self.http.close()
