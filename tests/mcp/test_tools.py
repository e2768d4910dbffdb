"""The tools a host sees: names, argument and output schemas, --read-only, the core install."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ALICE, call, call_error, drive, server

TOOLS = {"send", "inbox", "reply", "release", "reject", "conversations", "conversation",
         "wait_for_reply", "status"}


def _tools(app):
    async def scenario(client):
        return {t.name: t for t in (await client.list_tools()).tools}
    return drive(app, scenario)


def test_every_tool_is_listed_with_its_argument_and_output_schema(make_inbox):
    tools = _tools(server(make_inbox(ALICE)))
    assert set(tools) == TOOLS
    send = tools["send"]
    assert set(send.input_schema["required"]) == {"to", "subject", "payload"}
    assert "idempotency_key" in send.input_schema["properties"]
    assert {"conversation_id", "message_id"} <= set(send.output_schema["required"])
    wait = tools["wait_for_reply"]
    assert wait.input_schema["required"] == ["conversation"]
    assert "timeout_s" in wait.input_schema["properties"]
    for name in ("inbox", "reply", "release", "reject", "conversations", "conversation",
                 "wait_for_reply", "status"):
        assert tools[name].output_schema is not None, name
        assert tools[name].description, name
    assert tools["reply"].input_schema["required"] == ["claim_id", "payload"]
    assert tools["reject"].input_schema["required"] == ["claim_id", "reason"]
    # The inbox says what its bodies are, in the description every host shows the model.
    assert "untrusted" in tools["inbox"].description.lower()


def test_read_only_leaves_out_the_tools_that_send(make_inbox):
    app = server(make_inbox(ALICE), read_only=True)
    assert set(_tools(app)) == TOOLS - {"send", "reply"}

    async def scenario(client):
        error = await call_error(client, "send", to="bob@example.com", subject="s", payload={})
        return error, await call(client, "status")

    error, status = drive(app, scenario)
    assert "Unknown tool: send" in error
    assert status["read_only"] is True


def test_a_tool_refuses_a_mailbox_the_server_does_not_serve(make_inbox):
    async def scenario(client):
        return await call_error(client, "inbox", email="mallory@example.com")
    assert "does not act for 'mallory@example.com'" in drive(server(make_inbox(ALICE)), scenario)


def test_the_core_never_imports_the_mcp_sdk():
    script = ("import sys, agentmail, agentmail.cli, agentmail.services.inbox, "
              "agentmail.services.exchange; "
              "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
