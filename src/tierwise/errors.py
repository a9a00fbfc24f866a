"""Exceptions raised by tierwise.

TierwiseError
├── ConfigError            a config file or value is wrong; names the key path
├── RequestError           the client's request is malformed or unsupported; names the field (HTTP 400)
│   ├── UnknownModelError  ``model`` names no tier, route or configured model (HTTP 404)
│   └── LimitExceeded      an API key's budget (BudgetExceeded) or rate limit (RateLimited) (HTTP 429)
├── UpstreamError          one call to an upstream model failed
│   ├── UpstreamTimeout    no answer within the attempt's timeout
│   └── UpstreamConnectionError  the connection failed or broke
└── AllAttemptsFailed      every attempt of a request's plan failed; carries the attempts (HTTP 502)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.store.records import Attempt


class TierwiseError(Exception):
    """Base class of every error tierwise raises on purpose."""


class ConfigError(TierwiseError):
    """A configuration problem; the message names the key path and what was expected."""


class RequestError(TierwiseError):
    """A malformed or unsupported client request."""

    status = 400

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class UnknownModelError(RequestError):
    status = 404

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(
            f"model {model!r} is not served here; use one of: {', '.join(known)}",
            param="model",
            code="model_not_found",
        )


class AuthenticationError(RequestError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


class LimitExceeded(RequestError):
    """An API key's budget or rate limit refuses the request (HTTP 429); ``openai_type`` is the error type
    OpenAI's API gives it, ``retry_after`` the seconds until it may be tried again (when known)."""

    status = 429
    openai_type = "insufficient_quota"

    def __init__(self, message: str, *, code: str, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class BudgetExceeded(LimitExceeded):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="budget_exceeded")


class RateLimited(LimitExceeded):
    openai_type = "requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, code="rate_limit_exceeded", retry_after=retry_after)


class UpstreamError(TierwiseError):
    """One upstream call failed. ``retryable`` says whether trying again (same model) may help."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class UpstreamConnectionError(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class AllAttemptsFailed(TierwiseError):
    """Every model in the request's plan failed; ``attempts`` lists what was tried."""

    def __init__(self, attempts: list[Attempt]) -> None:
        summary = "; ".join(f"{a.model}: {a.error}" for a in attempts) or "no model could be tried"
        super().__init__(f"all upstream attempts failed ({summary})")
        self.attempts = attempts

    def attempts_shown(self) -> list[dict[str, Any]]:
        """What a client's error body lists of the attempts (never a provider's key or URL)."""
        return [
            {
                "model": a.model,
                "tier": a.tier,
                "status": a.status,
                "http_status": a.http_status,
                "error": a.error,
            }
            for a in self.attempts
        ]
