"""Finding the handler class named by `--handler package.module:Class`.

Like `uvicorn app:app`, `celery -A` and `flask run`, the current folder is importable, and
so is the config file's folder, so `--handler mymodule:MyAgent` finds `./mymodule.py`.
Whatever goes wrong while importing the user's module is shown as one short block (the
error and the user's own lines), never as a traceback through agentmail.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from agentmail import errors
from agentmail.agent import Agent

DEFAULT_SPEC = "agentmail.agent:Agent"
BLOCK_FRAMES = 3  # frames of the user's code shown when their module fails to import


def spec_of(agent: Agent) -> str:
    """The `module:Class` that names this agent's class, as journaled with each run."""
    cls = type(agent)
    return f"{cls.__module__}:{cls.__qualname__}"


def importable(spec: str) -> bool:
    """Whether another process could load this spec (a class defined in a script cannot)."""
    return not spec.startswith("__main__:")


def _search_path(folders: Sequence[Path]) -> list[str]:
    added = []
    for folder in folders:
        entry = str(folder.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
            added.append(entry)
    return added


def _user_block(exc: BaseException) -> str:
    """The error and the last few frames outside importlib: what the user needs to see."""
    if isinstance(exc, SyntaxError):
        lines = [f"  File \"{exc.filename}\", line {exc.lineno}"]
        if exc.text:
            lines.append(f"    {exc.text.rstrip()}")
            if exc.offset:
                lines.append("    " + " " * (exc.offset - 1 - (len(exc.text) - len(
                    exc.text.lstrip()))) + "^")
        lines.append(f"SyntaxError: {exc.msg}")
        return "\n".join(lines)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and "agentmail/services/handlers" not in f.filename]
    shown = traceback.format_list(frames[-BLOCK_FRAMES:])
    return "".join(shown).rstrip() + f"\n{type(exc).__name__}: {exc}"


def _import(module_name: str, spec: str, folders: Sequence[Path]) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            where = ", ".join(str(f) for f in folders)
            raise errors.UsageError(
                f"--handler {spec}: no module named {exc.name!r} (looked in {where} and the "
                "installed packages)") from exc
        raise errors.UsageError(f"--handler {spec}: importing {module_name} failed:\n"
                                f"{_user_block(exc)}") from exc
    except Exception as exc:  # SyntaxError, or whatever the module raises while importing
        raise errors.UsageError(f"--handler {spec}: importing {module_name} failed:\n"
                                f"{_user_block(exc)}") from exc


def load_class(spec: str, *, folders: Sequence[Path] = ()) -> type[Agent]:
    """The Agent subclass `spec` names; the current folder and `folders` are importable."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise errors.UsageError(f"--handler {spec!r} must look like package.module:ClassName")
    places = list(dict.fromkeys(f.resolve() for f in [Path.cwd(), *folders]))
    _search_path(places)
    module = _import(module_name, spec, places)
    found: object = module
    for part in class_name.split("."):
        found = getattr(found, part, None)
    if found is None:
        agents = [n for n, v in vars(module).items()
                  if inspect.isclass(v) and issubclass(v, Agent) and v is not Agent]
        near = difflib.get_close_matches(class_name, agents, n=1)
        hint = (f"; did you mean {near[0]!r}?" if near else
                f"; its Agent subclasses: {', '.join(agents)}" if agents else
                "; it defines no subclass of agentmail.Agent")
        where = getattr(module, "__file__", None) or module_name
        raise errors.UsageError(f"--handler {spec}: {where} has no class {class_name!r}{hint}")
    if not inspect.isclass(found):
        raise errors.UsageError(f"--handler {spec}: {class_name} is a {type(found).__name__}, "
                                "not a subclass of agentmail.Agent")
    if not issubclass(found, Agent):
        raise errors.UsageError(f"--handler {spec}: class {class_name} does not subclass "
                                "agentmail.Agent (write `class "
                                f"{class_name}(agentmail.Agent)`)")
    return found


def load_agent(spec: str | None, email: str, *, folders: Sequence[Path] = ()) -> Agent:
    """Instantiate the named Agent subclass, or the default acknowledging agent."""
    if not spec:
        return Agent(email)
    cls = load_class(spec, folders=folders)
    try:
        return cls(email)
    except TypeError as first:
        try:
            return cls()  # a subclass whose __init__ takes no address
        except TypeError:
            error: Exception = first
        except Exception as exc:
            error = exc
    except Exception as exc:
        error = exc
    raise errors.UsageError(f"--handler {spec}: creating the agent failed:\n"
                            f"{_user_block(error)}") from error
