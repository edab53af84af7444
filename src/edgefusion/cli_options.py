"""The one vocabulary of the command line, and the one way an old spelling of it keeps working.

Every command names the model it reads ``--model`` (a positional only where it reads several of
one kind; ``--teacher`` / ``--student`` where it reads two roles), its output ``--out``, image
pixels ``--size``, prompts ``--prompts FILE|NAME``, counts of prompts or samples
``--num-prompts``, and images per prompt ``--n``. A command that used to spell one of these
otherwise declares the old spelling with :func:`old_spellings`: it still works, hidden from
``--help`` (its usage line included, :class:`Command`), and says once on stderr what to type
instead.

A command's options may also come from a file: :func:`config_file` gives it ``--config FILE`` and
trailing ``key=value`` settings, read by the one config mechanism (:mod:`edgefusion.config`) into
a dataclass of the command's options, with options typed on the command line winning.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import ArgumentInfo, ParameterInfo

from edgefusion.config import apply_overrides, config_from_dict
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping

#: The parameter through which a command with a renamed required option receives its context.
_CONTEXT = "old_spellings_context"
#: The parameters :func:`config_file` adds: the file, the trailing settings, the context.
_CONFIG, _OVERRIDES, _CONFIG_CONTEXT = "config", "overrides", "config_context"
#: A word of the command line that is a ``key=value`` setting (``steps=2``, ``train.steps=5``).
_SETTING = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")


class Command(TyperCommand):
    """A command whose usage line leaves out its hidden (deprecated) positional arguments, as its
    option list leaves out its hidden options: ``--help`` shows only the vocabulary."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class SettingsGroup(TyperGroup):
    """A group whose own command (``invoke_without_command``) takes trailing ``key=value``
    settings (``edgefusion eval --config e.yaml steps=2``) beside its subcommands (``eval
    stats``): a first word that names a subcommand runs it with the words after it; otherwise
    every word is the group command's, options after settings included."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        opts, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        words = list(opts.get(_OVERRIDES) or ())
        if words and words[0] in self.commands:
            super().parse_args(ctx, args[: len(args) - len(words)])
            # Where click's own group keeps the subcommand and its words until it invokes it.
            ctx._protected_args, ctx.args = words[:1], words[1:]
            return ctx.args
        ctx.allow_interspersed_args = True
        return super().parse_args(ctx, args)


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
    return inspect.Parameter(_old(new), inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)


def _keyword_only(own: inspect.Signature, optional: set[str]) -> list[inspect.Parameter]:
    """A command's parameters as keywords (how typer calls it), those in ``optional`` defaulting
    to None: given by another spelling or a config file, and checked once those are read."""
    return [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=None if p.name in optional else p.default)
        for p in own.parameters.values()
    ]


def _old(new: str) -> str:
    """The parameter a hidden old spelling of ``new`` arrives in."""
    return f"old_{new}"


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
        params = _keyword_only(own, required)
        params += [_hidden(new, old, own.parameters[new]) for new, old in renames.items()]
        if required:
            params.append(
                inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            )

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            context = kwargs.pop(_CONTEXT, None)
            for new, old in renames.items():
                value = kwargs.pop(_old(new))
                if value is not None:
                    warn_deprecated(old if old.startswith("-") else f"a positional {old}", flag(new))
                    kwargs[new] = value
                if new in required and kwargs[new] is None:
                    context.fail(f"Missing option '{flag(new)}'.")
            return fn(**kwargs)

        command.__signature__ = own.replace(parameters=params)  # what typer reads
        return command

    return decorate


def config_file(what: str, shares: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``--config FILE`` and trailing ``key=value`` settings, the way the training
    stages take them: the file (YAML or JSON) holds the command's options by parameter name
    (``num_prompts: 20``), the settings override it, and an option typed on the command line wins
    over both. Both are checked against the command's options dataclass (:func:`options_dataclass`,
    on the command as ``.options``): an unknown key or a value of the wrong type is an error that
    names the key, and the file. Without either, the command runs exactly as it did.

    ``what`` names the command in errors (``unknown generate option stepz``). ``shares`` names the
    command's own positional words (``generate``'s prompts, ``bench``'s models), since click gives
    a command one open-ended list of them: its words of the form ``key=value`` are the settings,
    the others its prompts or models.
    Options the command requires may come from the file; one given nowhere is click's usage error."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(fn, eval_str=True)
        options = options_dataclass(fn, f"{what.title().replace(' ', '')}Options")
        required = {
            p.name
            for p in own.parameters.values()
            if _default(p) is inspect.Parameter.empty and _bare(p.annotation) is not typer.Context
        }
        params = _keyword_only(own, required)
        # typer hands a command one context: the command's own, where it takes one, else ours.
        has_context = [p.name for p in own.parameters.values() if _bare(p.annotation) is typer.Context]
        params += _config_parameters(what, shares, context=not has_context)

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            context = kwargs[has_context[0]] if has_context else kwargs.pop(_CONFIG_CONTEXT)
            path = kwargs.pop(_CONFIG)
            settings = _hidden_settings(kwargs) + (kwargs.pop(_OVERRIDES, None) or [])
            if shares is not None:
                words = kwargs[shares] or []
                settings += [w for w in words if _names_option(w, options)]
                kwargs[shares] = [w for w in words if not _names_option(w, options)] or None
            if path is not None or settings:
                kwargs.update(_from_config(options, what, path, settings, _given(context, kwargs, shares)))
            for name in sorted(required):
                if kwargs[name] is None:
                    context.fail(_missing(own.parameters[name]))
            return fn(**kwargs)

        command.__signature__ = own.replace(parameters=params)  # what typer reads
        command.options = options
        return command

    return decorate


def options_dataclass(fn: Callable[..., Any], name: str) -> type:
    """The dataclass of a command's options: a field per option or positional, named, typed and
    defaulted as the command's parameter (a required one defaults to None: it may come from the
    command line), hidden old spellings and the click context left out."""
    fields = []
    for param in inspect.signature(fn, eval_str=True).parameters.values():
        hint = _bare(param.annotation)
        if param.name.startswith(_old("")) or hint is typer.Context:
            continue
        default = _default(param)
        default = None if default is inspect.Parameter.empty else default
        if isinstance(default, list):
            spec = dataclasses.field(default_factory=functools.partial(list, default))
        else:
            spec = dataclasses.field(default=default)
        fields.append((param.name, hint, spec))
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__module__ = fn.__module__
    return cls


def _config_parameters(what: str, shares: str | None, context: bool) -> list[inspect.Parameter]:
    """``--config FILE``, the trailing settings (unless the command's positionals carry them) and
    the context that reports a missing option (unless the command takes its own)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    file_help = f"YAML/JSON file of {what} options by name (e.g. num_prompts: 20); options given win."
    params = [
        inspect.Parameter(
            _CONFIG,
            keyword,
            annotation=Annotated[Path | None, typer.Option("--config", help=file_help)],
            default=None,
        ),
    ]
    if context:
        params.append(inspect.Parameter(_CONFIG_CONTEXT, keyword, annotation=typer.Context))
    if shares is None:
        settings_help = "KEY=VALUE settings over the config file, e.g. steps=2 num_prompts=20."
        annotation = Annotated[list[str] | None, typer.Argument(help=settings_help)]
        params.insert(1, inspect.Parameter(_OVERRIDES, keyword, annotation=annotation, default=None))
    return params


def _from_config(
    options: type, what: str, path: Path | None, settings: list[str], given: set[str]
) -> dict[str, Any]:
    """The options the file and settings set that the command line did not give, checked."""
    data = read_config_mapping(path, "config file") if path is not None else {}
    try:
        config_from_dict(options, data, what=f"{what} option")
    except EdgefusionError as err:
        raise EdgefusionError(f"config file {path}: {err}") from None
    data = apply_overrides(data, settings)
    config = config_from_dict(options, data, what=f"{what} option")
    return {key: getattr(config, key) for key in data if key not in given}


def _hidden_settings(kwargs: dict[str, Any]) -> list[str]:
    """A first setting that a hidden old positional (``quantize SRC``) took for itself: the
    positional is given back as not given, the word as a setting."""
    settings = []
    for name, value in kwargs.items():
        if name.startswith(_old("")) and _is_setting(value):
            settings.append(value)
            kwargs[name] = None
    return settings


def _is_setting(word: Any) -> bool:
    return isinstance(word, str) and _SETTING.match(word) is not None


def _names_option(word: str, options: type) -> bool:
    """Whether a word among a command's prompts or models is a setting: ``key=value`` with no
    space, whose key is one of the command's options. A prompt such as ``E=mc2 on a board`` stays
    a prompt."""
    if not _is_setting(word) or any(c.isspace() for c in word):
        return False
    key = word.split("=", 1)[0].split(".", 1)[0]
    return key in {f.name for f in dataclasses.fields(options)}


def _given(context: typer.Context, kwargs: dict[str, Any], shares: str | None) -> set[str]:
    """The options typed on the command line (a new spelling or an old one), which the file and
    settings do not override; the shared positionals count when words other than settings remain."""
    given = set()
    for name, value in kwargs.items():
        source = context.get_parameter_source(name)
        typed = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if name == shares:
            typed = bool(value)
        if typed or kwargs.get(_old(name)) is not None:
            given.add(name)
    return given


def _bare(annotation: Any) -> Any:
    """A parameter's type without typer's ``Annotated`` declaration."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _default(param: inspect.Parameter) -> Any:
    """A parameter's default, declared as the Python default or inside ``typer.Option(default)``;
    ``inspect.Parameter.empty`` for a required one."""
    default = param.default
    if isinstance(default, ParameterInfo):
        default = default.default
    return inspect.Parameter.empty if default is ... else default


def _missing(param: inspect.Parameter) -> str:
    """click's message for a required parameter given nowhere."""
    declarations = get_args(param.annotation)[1:] if get_origin(param.annotation) is Annotated else ()
    if any(isinstance(d, ArgumentInfo) for d in declarations):
        return f"Missing argument '{param.name.upper()}...'."
    return f"Missing option '{flag(param.name)}'."


def prompts_or_count(prompts: str | None, num_prompts: int) -> tuple[Path | None, int]:
    """``--prompts`` of a command where it used to be a count: a number that names no file is
    the old ``--prompts N`` (now ``--num-prompts N``); anything else is a prompt file or set."""
    if prompts is not None and prompts.isdigit() and not Path(prompts).exists():
        warn_deprecated(f"--prompts {prompts}", f"--num-prompts {prompts}")
        return None, int(prompts)
    return (None if prompts is None else Path(prompts)), num_prompts
