"""The one exception tree of the service; `apis/errors.py` turns it into OpenAI error envelopes.

ProxyError
├── InvalidRequest (400)             ── ContextLengthExceeded (400), PayloadTooLarge (413),
│                                       InvalidImage (400), ContentPolicyViolation (400)
├── InvalidApiKey (401)
├── ModelNotFound (404)
├── ServiceRateLimited (429)         this service's own RATE_LIMIT_PER_MINUTE, not Bing's quota
├── ServerShuttingDown (503)         the grace period after SIGTERM ran out
└── UpstreamError
    ├── UpstreamRateLimited (429)    throttled account, create 404 after many creates
    ├── UpstreamCaptcha (503)        a human must solve a captcha
    ├── UpstreamAccountBlocked (503)
    ├── UpstreamNotConfigured (503)  no account at all for the model's upstream (Bing or Copilot)
    ├── UpstreamAuthFailed (502)     cookies rejected; never 401, which would blame the caller's key
    ├── UpstreamRegionBlocked (502)
    ├── UpstreamBadResponse (502)    ── ConversationUnusable (502): expired or at its turn limit
    ├── UpstreamUnreachable (502)
    ├── UpstreamClosed (502)
    ├── UpstreamTimeout (504)
    ├── ImageCoinsExhausted (429)    Image Creator has no boosts left; the account still chats
    ├── ImageSignInRequired (502)    Image Creator needs a signed-in account; the account still chats
    └── StreamInterrupted (502/504)  the answer had started when the failure came
        └── ImageCreationFailed      Image Creator failed after Bing's chat answer (its own status)
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProxyError(Exception):
    """A failure that reaches the client as `{"error": {...}}` with `status_code`."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def status(self) -> int:
        """HTTP status for this instance (subclasses may vary it per instance)."""
        return self.status_code

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ProxyError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class InvalidImage(InvalidRequest):
    """An image part that cannot be used: bad URL or data, wrong type, too big, or refused by Bing."""

    default_code = "invalid_image"


class ContentPolicyViolation(InvalidRequest):
    """Bing's Image Creator blocked the prompt (OpenAI's images API answers the same way)."""

    default_code = "content_policy_violation"


class InvalidApiKey(ProxyError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class ModelNotFound(ProxyError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_code = "request_too_large"


class ServiceRateLimited(ProxyError):
    """This proxy's own per-key limit (RATE_LIMIT_PER_MINUTE); never confused with Bing's quota."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class ServerShuttingDown(ProxyError):
    """The service is stopping and the request outlived SHUTDOWN_GRACE_SECONDS."""

    status_code = 503
    default_code = "server_shutting_down"


class UpstreamError(ProxyError):
    status_code = 502
    error_type = "server_error"
    default_code = "upstream_error"


class UpstreamRateLimited(UpstreamError):
    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class UpstreamCaptcha(UpstreamError):
    status_code = 503
    default_code = "upstream_captcha_required"


class UpstreamAccountBlocked(UpstreamError):
    status_code = 503
    default_code = "upstream_account_blocked"


class UpstreamNotConfigured(UpstreamError):
    """The model's upstream has no account configured (for example no Copilot token or cookies)."""

    status_code = 503
    default_code = "upstream_not_configured"


class UpstreamAuthFailed(UpstreamError):
    default_code = "upstream_auth_failed"


class UpstreamRegionBlocked(UpstreamError):
    default_code = "upstream_region_blocked"


class UpstreamBadResponse(UpstreamError):
    default_code = "upstream_bad_response"


class ConversationUnusable(UpstreamBadResponse):
    """The conversation expired or hit its turn limit; a fresh one may succeed."""


class UpstreamUnreachable(UpstreamError):
    default_code = "upstream_unreachable"


class UpstreamClosed(UpstreamError):
    default_code = "upstream_closed"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"


class ImageCoinsExhausted(UpstreamError):
    """Image Creator said '0 coins available'; not an account state, as chat still works."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class ImageSignInRequired(UpstreamError):
    """Image Creator redirected to sign-in: the account is anonymous (no `_U` cookie) or signed out."""

    default_code = "upstream_auth_failed"


class StreamInterrupted(UpstreamError):
    """The upstream failed after answer text had arrived: never a quiet, cut answer."""

    default_code = "upstream_stream_interrupted"

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out

    @property
    def status(self) -> int:
        return 504 if self.timed_out else 502


class ImageCreationFailed(StreamInterrupted):
    """Image Creator failed after Bing's chat answer: the turn is not retried (its text was given),
    and the client hears the cause's status, type and code."""

    def __init__(self, cause: ProxyError) -> None:
        super().__init__(f"Bing answered, but creating the image failed: {cause.message}")
        self.cause = cause
        self.code = cause.code
        self.headers = dict(cause.headers)

    @property
    def status(self) -> int:
        return self.cause.status

    def envelope(self) -> dict[str, Any]:
        body = super().envelope()
        body["error"]["type"] = self.cause.error_type
        return body


def interrupted(cause: UpstreamError) -> StreamInterrupted:
    """The error to report when `cause` strikes after the answer has started."""
    return StreamInterrupted(
        f"The answer was cut off: {cause.message}", timed_out=isinstance(cause, UpstreamTimeout)
    )


CAPTCHA_HELP = (
    "Bing asks for a captcha: open https://www.bing.com/turing/captcha/challenge in a browser "
    "signed in with the same account, from the same IP, solve it, then retry."
)


COPILOT_CLOUDFLARE_HELP = (
    "Copilot asks for a Cloudflare (Turnstile) challenge, which only a browser can pass: use a "
    "signed-in access token (COPILOT_ACCESS_TOKEN) or fresh browser cookies from the same IP."
)


def result_error(value: str, message: str, *, throttle_retry_after: int = 3600) -> UpstreamError:
    """The error for a Bing `result.value` other than Success (create or final frame; PROTOCOL §8)."""
    said = f" Bing said: {message}" if message else ""
    if value == "Throttled":
        return UpstreamRateLimited(
            f"Bing throttled this account: its message quota is used up.{said}",
            headers={"Retry-After": str(throttle_retry_after), "x-should-retry": "false"},
        )
    if value == "CaptchaChallenge":
        return UpstreamCaptcha(CAPTCHA_HELP, headers={"x-should-retry": "false"})
    if value == "UnauthorizedRequest":
        return UpstreamAuthFailed(f"Bing rejected the service's account cookies.{said}")
    if value == "Forbidden":
        return UpstreamAccountBlocked(f"Bing has blocked the service's account.{said}")
    if value == "InvalidSession":
        return ConversationUnusable(f"The Bing conversation has expired.{said}")
    return UpstreamBadResponse(f"Bing answered {value}.{said}")
