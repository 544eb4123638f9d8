"""How the `choreo` command reports a wrong use of itself: one line on stderr, like its other
errors (`error: ...`), naming the help to read; and no type shown for flags in that help.

`UsageGroup` is the class of the top-level command: every usage error, of any subcommand,
passes through it.
"""

from __future__ import annotations

from typing import Any, NoReturn

from typer._click.core import Context  # typer bundles its own click
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperArgument, TyperGroup, TyperOption

from choreo.cli.output import EXIT_USAGE, fail


def usage_error_message(error: UsageError) -> str:
    """`No such option: --bogus (see 'choreo tail --help')`: the error, on one line."""
    command = error.ctx.command_path if error.ctx is not None else "choreo"
    message = " ".join(error.format_message().split()).rstrip(".")
    return f"{message} (see '{command} --help')"


class UsageGroup(TyperGroup):
    """The top-level group: a usage error anywhere below it is printed as one `error:` line and
    exits 2, instead of Typer's usage, hint and boxed message."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as error:
            _refuse(error)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as error:
            _refuse(error)


def _refuse(error: UsageError) -> NoReturn:
    if isinstance(error, NoArgsIsHelpError):  # `choreo` alone, `choreo dlq`: the help
        raise error
    fail(usage_error_message(error), EXIT_USAGE)


_display_type_rich = TyperOption.display_type_rich


def _display_type_rich_but_not_of_flags(option: TyperOption, ctx: Context) -> str | None:
    """A flag takes no value, so its help shows no type (Typer 0.29 shows `<bool>`)."""
    if option.is_bool_flag and option.metavar is None:
        return None
    return _display_type_rich(option, ctx)


setattr(TyperOption, "display_type_rich", _display_type_rich_but_not_of_flags)  # noqa: B010


_argument_display_type_rich = TyperArgument.display_type_rich


def _display_type_rich_unless_named(argument: TyperArgument, ctx: Context) -> str | None:
    """An argument with a metavar (`TOPIC`, `ORDER_ID`) is named by it in the help; a type
    label after it (Typer 0.29 shows `<str>`) says nothing more."""
    if argument.metavar is not None:
        return None
    return _argument_display_type_rich(argument, ctx)


setattr(TyperArgument, "display_type_rich", _display_type_rich_unless_named)  # noqa: B010
