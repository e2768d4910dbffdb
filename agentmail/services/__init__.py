"""Use cases behind the commands: each builds what it needs and owns its journal writes."""
