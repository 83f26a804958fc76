"""The library's errors, one class per case of the provider's error table.

Every message is safe to log: none carries the token, and numbers are masked.

::

    MobileStatusError
    ├── ConfigurationError            a setting is missing or malformed (names it)
    ├── ProviderError                 the provider answered with a non-2000 code
    │   ├── FatalProviderError        stops the run: nothing else can succeed
    │   │   ├── InvalidTokenError           4001
    │   │   ├── InsufficientBalanceError    4002
    │   │   ├── ServiceNotEnabledError      4004
    │   │   └── UnexpectedHTTPStatusError   e.g. 404 — the base URL is wrong
    │   ├── NumberRejectedError       4003, recorded against the number
    │   ├── UnknownProviderError      an undocumented code, recorded verbatim
    │   └── RetryableProviderError    retried with backoff, a bounded number of times
    │       ├── RateLimitedError            4029 (also slows the client down)
    │       ├── RequeryTooSoonError         4030
    │       ├── ProviderInternalError       5000
    │       ├── OperatorRefusedError        5001 (finally recorded as unknown)
    │       └── OperatorTimeoutError        5002
    ├── BudgetExhaustedError          the run's budget is spent; the number was not sent
    └── TransportError                retried with backoff, a bounded number of times
        ├── ConnectFailedError        the request never left: not billed
        ├── ResponseTimeoutError      sent, no answer in time: possibly billed
        ├── ConnectionLostError       sent, connection dropped: possibly billed
        ├── ServerError               HTTP 5xx
        └── MalformedResponseError    a body that is not the provider's JSON
"""

from __future__ import annotations

from typing import ClassVar


class MobileStatusError(Exception):
    """Base class of every error this library raises or reports."""

    retryable: ClassVar[bool] = False
    possibly_billed: ClassVar[bool] = False


class ConfigurationError(MobileStatusError, ValueError):
    """A setting is missing or malformed; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class ProviderError(MobileStatusError):
    """The provider answered with an error code (no order number, never billed)."""

    code: ClassVar[int | None] = None
    advice: ClassVar[str] = ""

    def __init__(self, code: int | None, provider_message: str | None) -> None:
        self.provider_code = code
        self.provider_message = provider_message
        text = f"provider code {code}: {provider_message or 'no message'}"
        if self.advice:
            text = f"{text}. {self.advice}"
        super().__init__(text)


class FatalProviderError(ProviderError):
    """No further call can succeed: the run stops after in-flight requests finish."""


class InvalidTokenError(FatalProviderError):
    """4001: the token is missing or invalid."""

    code = 4001
    advice = "Check the account token (MOBILE_STATUS_TOKEN) and rerun"


class InsufficientBalanceError(FatalProviderError):
    """4002: the account's balance is spent."""

    code = 4002
    advice = "Top up the provider account and rerun; answers already paid for are kept"


class ServiceNotEnabledError(FatalProviderError):
    """4004: the account is not verified or the service is not enabled."""

    code = 4004
    advice = "Enable the mobile status service for this account with the provider"


class UnexpectedHTTPStatusError(FatalProviderError):
    """An HTTP status the contract never uses (e.g. 404): the base URL is likely wrong."""

    advice = "Check MOBILE_STATUS_BASE_URL (the account's allocated domain)"

    def __init__(self, http_status: int) -> None:
        super().__init__(None, f"unexpected HTTP status {http_status}")
        self.http_status = http_status


class NumberRejectedError(ProviderError):
    """4003: the provider says the number is malformed."""

    code = 4003


class UnknownProviderError(ProviderError):
    """A code the contract does not document; recorded verbatim, not retried."""


class RetryableProviderError(ProviderError):
    """A provider-side condition that may clear: retried with backoff."""

    retryable = True


class RateLimitedError(RetryableProviderError):
    """4029: the account's QPS limit was exceeded."""

    code = 4029


class RequeryTooSoonError(RetryableProviderError):
    """4030: the same number was queried again too soon."""

    code = 4030


class ProviderInternalError(RetryableProviderError):
    """5000: the provider's internal error."""

    code = 5000


class OperatorRefusedError(RetryableProviderError):
    """5001: the network operator refused the query."""

    code = 5001


class OperatorTimeoutError(RetryableProviderError):
    """5002: the network operator timed out."""

    code = 5002


PROVIDER_ERRORS: dict[int, type[ProviderError]] = {
    cls.code: cls
    for cls in (
        InvalidTokenError,
        InsufficientBalanceError,
        ServiceNotEnabledError,
        NumberRejectedError,
        RateLimitedError,
        RequeryTooSoonError,
        ProviderInternalError,
        OperatorRefusedError,
        OperatorTimeoutError,
    )
    if cls.code is not None
}


def provider_error(code: int, message: str | None) -> ProviderError:
    """The error class for a non-2000 provider ``code``."""
    return PROVIDER_ERRORS.get(code, UnknownProviderError)(code, message)


class BudgetExhaustedError(MobileStatusError):
    """The run's budget of billed calls is spent: this number was not sent."""


class TransportError(MobileStatusError):
    """No usable answer came back; retried with backoff."""

    retryable = True


class ConnectFailedError(TransportError):
    """The connection could not be made, so the request was never sent."""


class ResponseTimeoutError(TransportError):
    """The request was sent but no answer arrived in time: the provider may have billed it."""

    possibly_billed = True


class ConnectionLostError(TransportError):
    """The connection dropped after the request was sent: possibly billed."""

    possibly_billed = True


class ServerError(TransportError):
    """HTTP 5xx from the provider or a gateway in front of it."""

    def __init__(self, http_status: int) -> None:
        super().__init__(f"HTTP {http_status} from the provider")
        self.http_status = http_status


class MalformedResponseError(TransportError):
    """The body is not the provider's JSON; the message quotes a short, safe excerpt."""
