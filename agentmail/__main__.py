from agentmail.cli import main

main()
