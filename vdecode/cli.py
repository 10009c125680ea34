"""The ``vdecode`` command line: the only module that exits or reports a :class:`VdecodeError`.

``vdecode DUMP [options]`` (no sub-command) is the post-mortem view; ``info``, ``log``, ``qmp`` and
``bundle`` are sub-commands. Each command is a thin shell: it opens inputs, calls the pipeline and
hands the result to ``render/``.
"""

from __future__ import annotations

import sys

import click

from vdecode.errors import VdecodeError

# Each command's body lives beside it here, its work in the pipeline's stages; commands are
# registered on the group below. Commands are added by the modules' owners as they land.


class _DefaultGroup(click.Group):
    """A group whose first argument may be a dump: ``vdecode core.elf --queue 2`` runs ``view``."""

    default_command = "view"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vdecode")
def cli() -> None:
    """Answer QEMU's virtio questions from what a dead VM left behind.

    \b
    vdecode DUMP [--log LOG] [--queue N]   post-mortem view of the virtio devices
    vdecode qmp DUMP [--log LOG]           an offline QMP monitor (QEMU 7.2's replies)
    vdecode info DUMP                      what a dump holds
    vdecode log LOG                        what a QMP log holds
    """


def main() -> None:
    """Entry point: run the command; a :class:`VdecodeError` becomes one line and an exit status."""
    try:
        cli.main(standalone_mode=False)
    except VdecodeError as err:
        click.echo(f"vdecode: error: {err}", err=True)
        sys.exit(err.exit_status)
    except click.exceptions.Abort:
        click.echo("vdecode: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(0)


# --- commands -------------------------------------------------------------------------------
