"""The life of a received message: its states and the one table of allowed transitions.

The pipeline, recovery, replay and outside handlers (MCP) all change a message's state
only through events whose kinds are in `TRANSITIONS`; the journal applies each one as a
compare-and-set in the database: the message must be in one of the `sources` states and,
for a fenced kind, still carry the claim token the change was decided under. A change that
finds anything else fails with `errors.LeaseLost` and commits nothing, so a run that lost
its claim (declared dead while it stalled) cannot send, ack or release what another run
now owns.

    pending ──claimed──▶ claimed ──processed──▶ processed ──acked──▶ acked
       ▲  │                 │  ╲                    │ ╲
       │  │                 │   dead_lettered ◀─────┘  sent (stays processed)
       │  │                 └─released─▶ pending
       │  ├─rejected─▶ rejected
       │  └─duplicate─▶ duplicate
       └──replay_requested── dead_lettered | pending | acked

Pure: no I/O, no database.
"""

from __future__ import annotations

from dataclasses import dataclass

PENDING = "pending"
CLAIMED = "claimed"
PROCESSED = "processed"
ACKED = "acked"
DEAD_LETTERED = "dead_lettered"
REJECTED = "rejected"
DUPLICATE = "duplicate"  # a second delivery of a message already received (same id, sender, body)
SENT = "sent"  # a copy of a message we sent, in our own mailbox (never changes)

IN_FLIGHT = (CLAIMED, PROCESSED)
FINAL = (ACKED, DEAD_LETTERED, REJECTED, DUPLICATE)


@dataclass(frozen=True)
class Transition:
    """What an event kind may do to a message.

    `sources`: states it applies to; `target`: the state after it (None: unchanged);
    `fenced`: it must carry the current claim token; `new_owner`: it issues a new token.
    """

    sources: tuple[str, ...]
    target: str | None
    fenced: bool
    new_owner: bool = False


# Keyed by journal event kind (agentmail.journal.events); `fetched` creates the message.
TRANSITIONS: dict[str, Transition] = {
    "claimed": Transition((PENDING,), CLAIMED, fenced=False, new_owner=True),
    # Recovery taking over a dead run's claim, before it finishes or undoes it.
    "reconciled": Transition(IN_FLIGHT, None, fenced=True, new_owner=True),
    "processed": Transition((CLAIMED,), PROCESSED, fenced=True),
    "sent": Transition((PROCESSED, REJECTED), None, fenced=True),
    "acked": Transition((PROCESSED,), ACKED, fenced=True),
    # A failed attempt (in flight), or a refused error reply to a rejected message.
    "failed": Transition((*IN_FLIGHT, REJECTED), None, fenced=True),
    "released": Transition((CLAIMED,), PENDING, fenced=True),
    "dead_lettered": Transition(IN_FLIGHT, DEAD_LETTERED, fenced=True),
    "rejected": Transition((PENDING,), REJECTED, fenced=False),
    "duplicate": Transition((PENDING,), DUPLICATE, fenced=False),
    # An operator's replay fences out any holder and starts a fresh attempt budget.
    "replay_requested": Transition((DEAD_LETTERED, PENDING, ACKED), PENDING, fenced=False,
                                   new_owner=True),
}


def allowed(kind: str, state: str) -> bool:
    """May an event of `kind` apply to a message in `state`?"""
    rule = TRANSITIONS.get(kind)
    return rule is not None and state in rule.sources


def after(kind: str, state: str) -> str:
    """The state an allowed event of `kind` leaves a message in."""
    rule = TRANSITIONS[kind]
    return rule.target or state
