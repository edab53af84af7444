"""The one vocabulary of the command line, and the one way an old spelling of it keeps working.

Every command names the model it reads ``--model`` (a positional only where it reads several of
one kind; ``--teacher`` / ``--student`` where it reads two roles), its output ``--out``, image
pixels ``--size``, prompts ``--prompts FILE|NAME``, counts of prompts or samples
``--num-prompts``, and images per prompt ``--n``. A command that used to spell one of these
otherwise declares the old spelling with :func:`old_spellings`: it still works, hidden from
``--help``, and says once on stderr what to type instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer

#: The parameter through which a command with a renamed required option receives its context.
_CONTEXT = "old_spellings_context"


def flag(name: str) -> str:
    """The option a command parameter ``name`` is spelled as on the command line."""
    return "--" + name.replace("_", "-")


def warn_deprecated(old: str, new: str) -> None:
    """The one line an old spelling prints: what to type instead."""
    typer.echo(f"warning: {old} is deprecated; use {new}", err=True)


def _value_type(parameter: inspect.Parameter) -> Any:
    """The type a hidden old spelling of ``parameter`` parses to: the new one's, or None."""
    annotation = parameter.annotation
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation | None


def _hidden(new: str, old: str, target: inspect.Parameter) -> inspect.Parameter:
    """The hidden parameter that reads ``old``: an option when it starts with ``-``, else the
    positional argument the command once took."""
    help_text = f"Deprecated: use {flag(new)}."
    if old.startswith("-"):
        declaration = typer.Option(old, hidden=True, help=help_text)
    else:
        declaration = typer.Argument(hidden=True, metavar=old, help=help_text)
    annotation = Annotated[_value_type(target), declaration]
    return inspect.Parameter(
        f"old_{new}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None
    )


def old_spellings(**renames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keep old spellings of a command's parameters working: ``size="--resolution"`` adds a
    hidden ``--resolution`` whose value, when given, becomes ``size`` after a warning; an old
    spelling without dashes (``model="SRC"``) is a positional argument the command once took.

    A parameter that had no default becomes optional on the command line (either spelling
    gives it) and a missing one is the usage error click gives for a missing option (the
    command then receives its click context to raise it with)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(fn, eval_str=True)
        required = {new for new in renames if own.parameters[new].default is inspect.Parameter.empty}
        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=None if p.name in required else p.default)
            for p in own.parameters.values()
        ]
        params += [_hidden(new, old, own.parameters[new]) for new, old in renames.items()]
        if required:
            params.append(
                inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            )

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            context = kwargs.pop(_CONTEXT, None)
            for new, old in renames.items():
                value = kwargs.pop(f"old_{new}")
                if value is not None:
                    warn_deprecated(old if old.startswith("-") else f"a positional {old}", flag(new))
                    kwargs[new] = value
                if new in required and kwargs[new] is None:
                    context.fail(f"Missing option '{flag(new)}'.")
            return fn(**kwargs)

        command.__signature__ = own.replace(parameters=params)  # what typer reads
        return command

    return decorate


def prompts_or_count(prompts: str | None, num_prompts: int) -> tuple[Path | None, int]:
    """``--prompts`` of a command where it used to be a count: a number that names no file is
    the old ``--prompts N`` (now ``--num-prompts N``); anything else is a prompt file or set."""
    if prompts is not None and prompts.isdigit() and not Path(prompts).exists():
        warn_deprecated(f"--prompts {prompts}", f"--num-prompts {prompts}")
        return None, int(prompts)
    return (None if prompts is None else Path(prompts)), num_prompts
