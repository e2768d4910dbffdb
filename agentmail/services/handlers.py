"""Finding the handler class named by `--handler package.module:Class`."""

from __future__ import annotations

import importlib
import inspect

from agentmail import errors
from agentmail.agent import Agent


def load_agent(spec: str | None, email: str) -> Agent:
    """Instantiate the named Agent subclass, or the default acknowledging agent."""
    if not spec:
        return Agent(email)
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise errors.UsageError(f"--handler {spec!r} must look like package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.UsageError(f"--handler: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Agent)):
        raise errors.UsageError(f"--handler: {spec!r} is not a subclass of agentmail.Agent")
    try:
        return cls(email)
    except TypeError:
        return cls()  # a subclass whose __init__ takes no address
