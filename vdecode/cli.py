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


def decompress_progress(label: str = "decompressing"):
    """A progress callback for ``open_dump``: a bar on stderr while a compressed dump is unpacked.

    Other commands that open dumps pass it too: ``open_dump(path, progress=decompress_progress())``.
    """
    state = {"shown": -1}
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if not tty or pct == state["shown"]:
            return
        state["shown"] = pct
        bar = "#" * (pct * 30 // 100)
        click.echo(f"\r{label} [{bar:<30}] {pct:3d}%", err=True, nl=pct >= 100)

    return progress


@cli.command("info")
@click.argument("dump", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where compressed dumps are decompressed (default ~/.cache/vdecode).")
def info_command(dump: str, as_json: bool, cache_dir: str | None) -> None:
    """What a dump holds: format, machine, RAM ranges, vCPUs, VMCOREINFO, page counts."""
    from vdecode.render.info import render_info_json, render_info_text
    from vdecode.space.open import open_dump

    with open_dump(dump, cache_dir=cache_dir, progress=decompress_progress()) as opened:
        info = dict(opened.info)
        info.setdefault("format", opened.format)
        info.setdefault("file", opened.path)
    click.echo(render_info_json(info) if as_json else render_info_text(info), nl=False)
