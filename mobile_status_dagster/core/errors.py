"""Every error the library raises, one class per case of the provider's error table.

Every message is safe to log: none carries the token, and numbers are masked. Each class
carries its ``advice`` (what to do) and its ``category``, which the command line turns
into its exit status.

::

    MobileStatusError
    ├── InputError                    bad input: a file, a set id, a directory (category input)
    │   ├── ConfigurationError        a setting is missing or malformed (names it)
    │   ├── LoadError                 a number file cannot be loaded (names it)
    │   ├── ExportError               an export cannot be written
    │   ├── UnknownSetError           a set id with no rows, or no database yet
    │   └── DemoDirectoryError        the demo must not overwrite this directory
    ├── StoreError                    the store failed (category store); paid answers are kept
    │   ├── DatabaseOpenError         the file or server cannot be opened
    │   ├── StoreWriteError           a write was refused mid-run; answers are in the journal
    │   ├── SegmentRefusedError       the store refused a journal segment's data
    │   ├── UntrustedFileError        a journal path another user could have planted
    │   ├── UnfoldableSegmentError    a journal segment cannot be folded nor quarantined
    │   └── SchemaVersionError        the tables were written by a newer version
    ├── EnrichmentStopped             a run could not publish every partition
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
            └── OversizedResponseError    over 64 KiB: refused unread, possibly billed
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from mobile_status_dagster.core.engine.enrich import EnrichmentReport

ErrorCategory = Literal["input", "provider", "store", "interrupted", "unfinished"]
"""What kind of failure: bad input or configuration, a provider refusal, a store failure,
an interrupted run, or a run that could not finish (numbers left without an answer)."""


class MobileStatusError(Exception):
    """Base class of every error this library raises or reports."""

    retryable: ClassVar[bool] = False
    possibly_billed: ClassVar[bool] = False
    category: ClassVar[ErrorCategory] = "unfinished"
    advice: ClassVar[str] = ""
    """What to do about it. Fatal errors say it in their message; the others' advice
    explains, in a run's stop message, why numbers were left without an answer."""


class InputError(MobileStatusError):
    """Bad input: the message names the file, setting, set id or directory at fault."""

    category = "input"


class ConfigurationError(InputError, ValueError):
    """A setting is missing or malformed; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class LoadError(InputError):
    """A file could not be loaded; the message names the file and what is wrong."""


class ExportError(InputError):
    """An export could not be written; the message says why."""


class UnknownSetError(InputError):
    """A requested set id has no rows in the source table (or there is no database yet)."""


class DemoDirectoryError(InputError):
    """The demo was pointed at a directory it must not overwrite."""


class StoreError(MobileStatusError):
    """The store (DuckDB or PostgreSQL) could not be opened or written; every paid
    answer is kept."""

    category = "store"


class DatabaseOpenError(StoreError):
    """The DuckDB file or the PostgreSQL server cannot be opened; the message names it."""


class StoreWriteError(StoreError):
    """The store refused a write mid-run; the answers are safe in the journal."""


class SegmentRefusedError(StoreError):
    """The store refused a journal segment for what it holds (a value it cannot take),
    not for the disk or the server: recovery quarantines the segment and goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnfoldableSegmentError(StoreError):
    """A journal segment DuckDB cannot fold could not be moved to the quarantine either.

    A segment that cannot be folded is normally moved to ``<journal>/quarantine/`` and the
    run goes on; this stops the run instead, when that move fails. The message names the
    segment; the file is kept where it is.
    """


class UntrustedFileError(StoreError):
    """A journal directory or file may hold data planted by another user; names it and the fix."""


class SchemaVersionError(StoreError):
    """The library's tables were written by a newer version of it; nothing was changed."""


class EnrichmentStopped(MobileStatusError):
    """The run stopped before every partition could be published (``report`` says why)."""

    def __init__(self, report: EnrichmentReport) -> None:
        super().__init__(report.stop_message())
        self.report = report


class ProviderError(MobileStatusError):
    """The provider answered with an error code (no order number, never billed)."""

    code: ClassVar[int | None] = None

    def __init__(self, code: int | None, provider_message: str | None) -> None:
        self.provider_code = code
        self.provider_message = provider_message
        super().__init__(self._text(f"provider code {code}: {provider_message or 'no message'}"))

    def _text(self, text: str) -> str:
        return text


class FatalProviderError(ProviderError):
    """No further call can succeed: the run stops after in-flight requests finish."""

    category = "provider"

    def _text(self, text: str) -> str:
        return f"{text}. {self.advice}" if self.advice else text


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

    advice = "the provider answered an undocumented code (see provider_calls)"


class RetryableProviderError(ProviderError):
    """A provider-side condition that may clear: retried with backoff."""

    retryable = True


class RateLimitedError(RetryableProviderError):
    """4029: the account's QPS limit was exceeded."""

    code = 4029
    advice = "the provider kept refusing for QPS (4029); lower MOBILE_STATUS_QPS"


class RequeryTooSoonError(RetryableProviderError):
    """4030: the same number was queried again too soon."""

    code = 4030
    advice = "the provider asked to wait before asking again (4030)"


class ProviderInternalError(RetryableProviderError):
    """5000: the provider's internal error."""

    code = 5000
    advice = "the provider reported internal errors (5000)"


class OperatorRefusedError(RetryableProviderError):
    """5001: the network operator refused the query."""

    code = 5001


class OperatorTimeoutError(RetryableProviderError):
    """5002: the network operator timed out."""

    code = 5002
    advice = "the operator timed out (5002)"


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

    advice = "the provider could not be reached; check MOBILE_STATUS_BASE_URL and the network"


class ResponseTimeoutError(TransportError):
    """The request was sent but no answer arrived in time: the provider may have billed it."""

    possibly_billed = True
    advice = (
        "the provider did not answer in time (possibly billed); "
        "check its status or raise MOBILE_STATUS_TIMEOUT_S"
    )


class ConnectionLostError(TransportError):
    """The connection dropped after the request was sent: possibly billed."""

    possibly_billed = True
    advice = "connections dropped after sending (possibly billed)"


class ServerError(TransportError):
    """HTTP 5xx from the provider or a gateway in front of it."""

    advice = "the provider answered HTTP 5xx"

    def __init__(self, http_status: int) -> None:
        super().__init__(f"HTTP {http_status} from the provider")
        self.http_status = http_status


class MalformedResponseError(TransportError):
    """The body is not the provider's JSON; the message quotes a short, safe excerpt."""

    advice = "the provider's answers were not its JSON"


class OversizedResponseError(MalformedResponseError):
    """An answer larger than the client's cap (64 KiB): refused unread, possibly billed."""

    possibly_billed = True
    advice = "the provider's answers were larger than 64 KiB (refused, possibly billed)"
