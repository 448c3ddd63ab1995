"""One OAuth2 client-credentials client, for both sides of HubEE (the CNAF's OSL scope, a département's SI).

Both sides ask the same kind of token endpoint, keep the token until shortly before it expires,
share it between the threads and transports of a process, and renew it once when the API refuses
it (a token revoked or expired early). That was written twice; it lives here once. A token request
is safe to repeat, so a passing failure (no answer, HTTP 429 or 5xx) is retried with backoff and
jitter; refused credentials are not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..core.errors import TransportError
from .retry import RetryPolicy

# Renew a token this long before it expires: a request started on a nearly expired token could
# reach the API after its end.
RENEW_MARGIN = 60.0
DEFAULT_TOKEN_LIFETIME = 300.0  # when the token answer has no expires_in: assume short


class TokenError(TransportError):
    """No token: nothing else can be asked of the API until this is fixed. `transient` may pass by itself."""

    def __init__(self, partner: str, reason: str, *, permanent: bool = False, transient: bool = False):
        super().__init__(partner, reason, permanent=permanent)
        self.transient = transient


class TokenCache:
    """Tokens per (token URL, client id), shared by the transports of a process.

    A national night builds ~100 HubEE transports; sharing means three token requests, not three hundred.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float, float]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: tuple[str, str], fetch: Callable[[], tuple[str, float]]) -> str:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # One fetch per client at a time: parallel départements wait for it rather than all asking.
        with lock:
            hit = self._tokens.get(key)
            if hit is not None and hit[1] - self.clock() > hit[2]:
                return hit[0]
            token, lifetime = fetch()
            # A token shorter-lived than twice the margin would be renewed at every call: halve instead.
            self._tokens[key] = (token, self.clock() + lifetime, min(RENEW_MARGIN, lifetime / 2))
            return token

    def drop(self, key: tuple[str, str], token: str) -> None:
        with self._guard:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


SHARED_TOKENS = TokenCache()


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    token_url: str
    client_id: str
    secret: str = field(repr=False)
    scope: str


def oauth_error_detail(response: httpx.Response) -> str:
    """RFC 6749's error body ({"error": ..., "error_description": ...}) as "code: description"."""
    try:
        body = json.loads(response.content[: 64 * 1024])
    except ValueError:
        return ""
    if not isinstance(body, dict) or "error" not in body:
        return ""
    return ": ".join(p for p in (str(body.get("error") or ""), str(body.get("error_description") or "")) if p)


def no_answer_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout, {type(exc).__name__}"
    return type(exc).__name__


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TokenError) and exc.transient


class OAuth2Client:
    """A client id's bearer tokens, from the cache or the token endpoint; `authorized` renews a refused one once."""

    def __init__(
        self,
        http: httpx.Client,
        credentials: ClientCredentials,
        *,
        partner: str,
        label: str,
        tokens: TokenCache | None = None,
        retry: RetryPolicy | None = None,
        detail: Callable[[httpx.Response], str] = oauth_error_detail,
    ):
        self.http = http
        self.credentials = credentials
        self.partner = partner
        self.label = label  # how errors name this token, e.g. "HubEE token for GRO (client x)"
        self.tokens = tokens if tokens is not None else SHARED_TOKENS
        self.retry = retry if retry is not None else RetryPolicy()
        self.detail = detail
        self.key = (credentials.token_url, credentials.client_id)

    def token(self) -> str:
        return self.tokens.get(self.key, lambda: self.retry.call(self._fetch, _transient))

    def _fail(self, reason: str, **kw: Any) -> TokenError:
        return TokenError(self.partner, f"{self.label}: {reason}", **kw)

    def _fetch(self) -> tuple[str, float]:
        c = self.credentials
        try:
            r = self.http.post(
                c.token_url,
                auth=(c.client_id, c.secret),
                data={"grant_type": "client_credentials", "scope": c.scope},
            )
        except httpx.HTTPError as exc:
            raise self._fail(f"no answer ({no_answer_kind(exc)})", transient=True) from None
        if r.status_code != 200:
            detail = self.detail(r)
            # 400 (invalid_scope, invalid_request) and 401 (invalid_client) are the credentials' fault.
            raise self._fail(
                f"HTTP {r.status_code}" + (f" ({detail})" if detail else ""),
                permanent=r.status_code in (400, 401, 403),
                transient=r.status_code == 429 or r.status_code >= 500,
            )
        try:
            body = r.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise self._fail("the answer holds no access_token") from None
        if not isinstance(token, str) or not token:
            raise self._fail("the answer holds no access_token")
        return token, max(lifetime, 1.0)

    def authorized(self, send: Callable[[str], httpx.Response]) -> httpx.Response:
        """send(token); on a 401 the token is dropped and send runs once more with a fresh one."""
        token = self.token()
        r = send(token)
        if r.status_code != 401:
            return r
        r.close()  # a streamed answer holds its connection until closed
        self.tokens.drop(self.key, token)
        return send(self.token())
