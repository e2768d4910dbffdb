"""The MCP server of agentmail (`agentmail mcp`); needs the `mcp` extra: agentmail-cli[mcp]."""
