"""The one exception hierarchy of evalsvc.

Every error a user can cause or meet is an ``EvalsvcError``; the CLI maps the
branches to exit codes, and the run loop turns ``EndpointError`` into an
*errored* case (never a quality score)::

    EvalsvcError                      exit 2 ("could not evaluate")
    ├── UserInputError                the user can fix it: names the place and the fix
    │   ├── ConfigError               evalsvc.yaml
    │   └── SuiteError                a suite header or one of its JSONL lines
    ├── EndpointError                 talking to a model server failed
    │   ├── TransientEndpointError    5xx, timeout, reset: retried with backoff
    │   ├── RateLimitedError          429: retried after Retry-After
    │   ├── FatalEndpointError        4xx (bad key, unknown model): not retried
    │   └── MalformedResponseError    a 2xx answer that does not fit the OpenAI response schema: retried with backoff
    │       └── ResponseTooLargeError past the size cap derived from max_tokens: also a FatalEndpointError
    ├── ServingError                  a managed model server did not start or died
    └── StoreError                    the database is unreachable or not migrated
"""

from __future__ import annotations


class EvalsvcError(Exception):
    """Base class: anything evalsvc raises on purpose."""

    exit_code = 2


MAX_LINE = 1000  # characters per line of a message: a 10 MB id or key in the input must not make a 10 MB error


class UserInputError(EvalsvcError):
    """Input the user wrote is wrong; the message says where and how to fix it."""

    def __init__(self, where: str, problem: str, fix: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        text = f"{where}: {problem}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__("\n".join(line if len(line) <= MAX_LINE else line[:MAX_LINE] + "… (cut)" for line in text.split("\n")))

    def __reduce__(self) -> tuple:  # pickled whole (a Ray task's error travels to its driver)
        return self.__class__, (self.where, self.problem, self.fix)


class ConfigError(UserInputError):
    """evalsvc.yaml (or a value it references) is invalid."""


class SuiteError(UserInputError):
    """A suite file is invalid."""


class EndpointError(EvalsvcError):
    """A request to a model endpoint failed."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientEndpointError(EndpointError):
    """Worth retrying: server error, timeout, dropped connection."""

    retryable = True


class RateLimitedError(EndpointError):
    """HTTP 429; ``retry_after`` is the server's requested wait in seconds, if given."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429)


class FatalEndpointError(EndpointError):
    """Retrying cannot help (bad credentials, unknown model, malformed request)."""


class MalformedResponseError(EndpointError):
    """A 2xx answer that is not an OpenAI response: unparsable or undecodable body, a field of the wrong type
    (content that is neither text nor text parts, a ``usage`` that is no object, a token count that is no count).
    Retried like a transient error (a proxy or an overloaded server garbles one answer), and never scored."""

    retryable = True


class ResponseTooLargeError(MalformedResponseError, FatalEndpointError):
    """The body ran past the cap that the request's ``max_tokens`` allows: reading it whole could exhaust memory,
    and the same request would get the same answer, so it is fatal (not retried; a judge's is that answer's alone)."""

    retryable = False


class ServingError(EvalsvcError):
    """A managed model server could not be started or stopped."""


class StoreError(EvalsvcError):
    """The result store is unreachable, or its schema is not at the current revision."""
