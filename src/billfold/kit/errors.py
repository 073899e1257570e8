"""Every refusal Billfold can give, as a type with an HTTP status and a stable code.

    BillfoldError                  400 bad_request
    ├── InvalidInput               422 invalid_input      (payload or parameter validation)
    ├── Unauthenticated            401 unauthenticated
    ├── Forbidden                  403 forbidden
    │   ├── InsufficientScope      403 insufficient_scope
    │   └── AgentForbidden         403 agent_forbidden
    ├── NotFound                   404 not_found           (domain packages subclass it)
    ├── Conflict                   409 conflict            (domain packages subclass it)
    ├── Gone                       410 gone
    ├── PayloadTooLarge            413 payload_too_large
    └── RateLimited                429 rate_limited

Domain packages define their own subclasses (`CustomerNotFound`, `ClaimCodeExpired`, ...)
with their own codes. The HTTP layer turns any of them into RFC 9457 problem+json; nothing
below the HTTP layer knows about FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One offending part of a request.

    `pointer` is a JSON pointer into the body (RFC 9457 style, `#/customer`);
    `parameter` names a path, query or header parameter instead.
    """

    detail: str
    pointer: str | None = None
    parameter: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"detail": self.detail}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.parameter is not None:
            out["parameter"] = self.parameter
        return out


class BillfoldError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class InvalidInput(BillfoldError):
    status = 422
    code = "invalid_input"
    title = "The request is not valid"


class Unauthenticated(BillfoldError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        # RFC 9110 15.5.2: every 401 names the scheme that would work.
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(BillfoldError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    title = "The API key's scope does not allow this"


class AgentForbidden(Forbidden):
    code = "agent_forbidden"
    title = "AI agents may not change state"


class NotFound(BillfoldError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(BillfoldError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(BillfoldError):
    status = 410
    code = "gone"
    title = "Gone"


class PayloadTooLarge(BillfoldError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class RateLimited(BillfoldError):
    status = 429
    code = "rate_limited"
    title = "Too many attempts"
