"""A asks B; B asks C on A's behalf; C answers B; B answers A: one conversation throughout."""

from __future__ import annotations

import json

from agentmail.agent import Agent
from agentmail.journal.conversations import resolve_one
from agentmail.services.sending import send_request
from tests.cli.helpers import run_cli

from .conftest import ALICE, BOB

CAROL = "carol@example.com"


class Broker(Agent):
    """Forwards each request to CAROL and answers the asker once CAROL has answered."""

    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.waiting = {}  # our request's Message-ID -> the message it was asked for

    def process_message(self, message):
        if message.in_reply_to in self.waiting:  # CAROL's answer
            asker = self.waiting.pop(message.in_reply_to)
            self.reply_to_message(asker, {"answer": message.payload, "via": CAROL},
                                  allow_auto_reply=True)
        else:
            asked = self.send_message(CAROL, "sub-question", {"question": message.payload})
            self.waiting[asked] = message


def test_a_question_relayed_through_a_third_agent_stays_one_conversation(
        agents, emulator, journal, tmp_path, settings):
    runs = [agents.run(BOB, Broker(BOB)), agents.run(CAROL), agents.run(ALICE)]
    sent = send_request(journal, agents.mailbox(ALICE), to=[BOB], subject="question",
                        payload={"q": "six times seven"})
    for _ in range(4):
        for run in runs:
            run.cycle()
    # ALICE got the relayed answer
    answered = [r for r in journal.conversation_messages(sent.conversation_id)
                if r.account == ALICE and r.direction == "in"]
    assert len(answered) == 1
    assert json.loads(answered[0].payload)["via"] == CAROL
    # every message of the four hops, in every mailbox, is in the one conversation
    rows = [r for r in journal.conversation_messages(sent.conversation_id)]
    assert {r.account for r in rows} == {ALICE, BOB, CAROL}
    assert len({r.rfc_message_id for r in rows}) == 4
    assert resolve_one(journal, sent.message_id) == sent.conversation_id
    history = run_cli("--db", settings.db, "history", "--thread", sent.message_id, "--json")
    assert history.exit_code == 0, history.output
    hops = [(m["from"], m["to"]) for m in json.loads(history.stdout)["messages"]]
    assert hops == [(ALICE, [BOB]), (BOB, [CAROL]), (CAROL, [BOB]), (BOB, [ALICE])]
