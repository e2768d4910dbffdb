"""Building the mailbox adapter for an address: the emulator, or real Gmail with OAuth."""

from __future__ import annotations

from agentmail import auth
from agentmail.config import Settings
from agentmail.mailbox.base import Mailbox
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.mailbox.quota import QuotaBudget


def open_mailbox(settings: Settings, email: str) -> Mailbox:
    """The mailbox of `email`, its calls paced to the per-user quota of the settings."""
    budget = QuotaBudget(settings.quota_units_per_minute)
    if settings.emulator:
        return GmailMailbox(email, emulator_credentials(email), api_endpoint=settings.emulator,
                            budget=budget)
    credentials = auth.load_credentials(email, settings.path(settings.tokens_dir),
                                        settings.path(settings.credentials_path))
    return GmailMailbox(email, credentials, budget=budget)
