"""The whole exception tree of agentmail.

Branches follow what the caller does next::

    AgentmailError
    ├── ConfigError            bad configuration: fix the file, variable or flag (exit 2)
    ├── UsageError             a command was asked something it cannot do (exit 2)
    ├── NotFound               an id, thread or account the journal does not know (exit 1)
    ├── JournalError           the journal cannot be used as it is
    │   ├── NotAJournal        the --db file is something else; it was left untouched
    │   ├── SchemaTooNew       written by a newer agentmail; upgrade the code
    │   ├── JournalBusy        the database is unreachable or overloaded: retry later
    │   ├── JournalConflict    one write broke a constraint: that message's problem, not the run's
    │   └── LeaseLost          another run owns the message now: abandon it, send nothing
    ├── AuthError              credentials missing, expired or revoked: run `agentmail auth`
    ├── MailboxError           the mailbox provider failed a call
    │   ├── MailboxUnavailable could not reach it, 5xx, 429, rate limits: retry later
    │   └── MailboxRejected    the provider said no (4xx): retrying will not help
    ├── OutgoingRejected       an outgoing message is unsafe or invalid (header injection, recipients)
    ├── IdempotencyConflict    an idempotency key reused for different content (exit 1)
    ├── AlreadyRunning         another live run holds this mailbox
    ├── RunFenced              this run was declared dead by another; it stops without sending
    └── Interrupted            the user abandoned the work under way (exit 130)

Rejected mail and failing handlers are journal rows, not escaping exceptions:
these classes are for failures of agentmail's own machinery and of its callers.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class AgentmailError(Exception):
    """Something agentmail cannot do; the message says what to do about it."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigError(AgentmailError):
    """The configuration is invalid."""

    exit_code = EXIT_USAGE


class UsageError(AgentmailError):
    """The command cannot do what was asked."""

    exit_code = EXIT_USAGE


class NotFound(AgentmailError):
    """Nothing in the journal matches."""


class JournalError(AgentmailError):
    """The journal cannot be used."""

    exit_code = EXIT_USAGE


class NotAJournal(JournalError):
    """The database is not an agentmail journal; it was left untouched."""


class SchemaTooNew(JournalError):
    """The journal was written by a newer agentmail than this one."""

    def __init__(self, found: str, supported: str) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"the journal's schema version {found} is newer than this agentmail supports "
            f"({supported}); upgrade agentmail to use this journal"
        )


class JournalBusy(JournalError):
    """The journal database could not be reached or was too busy; the write can be retried."""

    exit_code = EXIT_FAILURE
    retryable = True


class JournalConflict(JournalError):
    """A write broke one of the journal's constraints; it concerns that write's message only."""

    exit_code = EXIT_FAILURE


class LeaseLost(JournalError):
    """The message is owned by another claim now: abandon it without sending anything."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None, *, key: str | None = None,
                 kind: str | None = None) -> None:
        self.key = key
        self.kind = kind
        super().__init__(message or f"the lease on {key} was lost before {kind}: another run "
                         "owns the message now")


class AuthError(AgentmailError):
    """Mailbox credentials are missing, expired or revoked."""

    exit_code = EXIT_USAGE


class MailboxError(AgentmailError):
    """The mailbox provider failed a call."""

    def __init__(self, message: str | None = None, *, status: int | None = None,
                 reason: str | None = None) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


class MailboxUnavailable(MailboxError):
    """The mailbox could not be reached or asked us to slow down; retry later."""

    retryable = True

    def __init__(self, message: str | None = None, *, status: int | None = None,
                 reason: str | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, reason=reason)


class MailboxRejected(MailboxError):
    """The mailbox refused the call; retrying it unchanged will not help."""

    retryable = False


class BodyUnavailable(JournalError):
    """The journal keeps no body for this message (it was compacted away)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the journal keeps no body for {key} any more (`agentmail journal "
                         "compact` deleted it); it cannot be handled again")
        self.key = key


class OutgoingRejected(AgentmailError):
    """An outgoing message was refused before anything was sent."""


class IdempotencyConflict(AgentmailError):
    """The idempotency key was used before for different content; nothing was sent."""


class AlreadyRunning(AgentmailError):
    """Another live run already holds this mailbox."""

    exit_code = EXIT_USAGE


class HistoryExpired(MailboxRejected):
    """The stored history id is too old or unknown to the mailbox; do a full sync."""


class RunFenced(AgentmailError):
    """Another run declared this one dead (its heartbeat stalled past its lease) and took over."""


class Interrupted(AgentmailError):
    """The user abandoned the work under way; the journal says what was left to retry."""

    exit_code = EXIT_INTERRUPTED
