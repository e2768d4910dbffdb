"""agentmail: agents that talk to each other over email."""
