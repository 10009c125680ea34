"""The ``vdecode`` command line: with :mod:`vdecode.entry` (the installed entry point, which runs
the plain ``vdecode DUMP [--queue N]`` view without importing click) and
:mod:`vdecode.command_line` (what the two share), the only modules that exit or report a
:class:`VdecodeError`.

``vdecode DUMP [options]`` (no sub-command) is the post-mortem view; ``info``, ``log``, ``qmp`` and
``bundle`` are sub-commands. Each command is a thin shell: it opens inputs, calls the pipeline and
hands the result to ``render/``.
"""

from __future__ import annotations

import sys

import click

from vdecode.command_line import finish, open_machine
from vdecode.command_line import terminal_width as _terminal_width
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
    vdecode qmp QEMU_CORE GUEST_DUMP       QEMU's state from its core, guest RAM from a dump
    vdecode report DUMP -o FILE.html       one HTML page: each ring drawn, findings, QMP
    vdecode info DUMP                      what a dump holds
    vdecode log LOG                        what a QMP log holds
    vdecode trace TRACE [--core CORE]      QEMU's trace as a per-queue timeline
    vdecode record QMP_SOCKET -o LOG       a rolling QMP log of a running QEMU
    vdecode cache list|clear               the cache of decompressed inputs
    """


def main() -> None:
    """Run the command; a :class:`VdecodeError` becomes one line and an exit status
    (``SystemExit`` when not 0, so a caller in the same process gets it back)."""
    status = _run()
    if status:
        sys.exit(status)


def console_main() -> None:
    """:func:`main` through click whatever the form, then the quick exit
    (:func:`vdecode.command_line.finish`). The installed ``vdecode`` is
    :func:`vdecode.entry.console_main`, which reads the plain ``vdecode DUMP [--queue N]`` form
    without click and hands anything else to :func:`_run` here."""
    finish(_run())


def _run() -> int:
    """The command's exit status."""
    try:
        cli.main(standalone_mode=False)
    except VdecodeError as err:
        click.echo(f"vdecode: error: {err}", err=True)
        return err.exit_status
    except click.exceptions.Abort:
        click.echo("vdecode: aborted", err=True)
        return 130
    except click.UsageError as err:       # a bad option or argument: one line too, with the way on
        where = f"; see '{err.ctx.command_path} --help'" if err.ctx is not None else ""
        click.echo(f"vdecode: error: {err.format_message().rstrip('.')}{where}", err=True)
        return err.exit_code
    except click.ClickException as err:
        click.echo(f"vdecode: error: {err.format_message()}", err=True)
        return err.exit_code
    except BrokenPipeError:
        return 0
    return 0


def _output_width() -> int:
    """The width ``info`` and ``log`` lay their text out in: ``$COLUMNS`` when set, else the
    terminal's, else (piped) 80; never under 40."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        columns = _terminal_width(80) if sys.stdout.isatty() else 80
    return max(40, columns)


# --- commands -------------------------------------------------------------------------------


def _open_machine(*args):
    """:func:`vdecode.entry.open_machine`, its warnings through ``click.echo``."""
    return open_machine(*args, echo=click.echo)


def _open_inputs(dump: str | tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                 vm: str | None, cache_dir: str | None, binary: str | None = None):
    """:func:`~vdecode.reconstruct.state.session.open_inputs` with a progress bar while a compressed
    dump is unpacked, and the log readers' warnings on stderr."""
    from vdecode.reconstruct.state.session import open_inputs
    from vdecode.render.text import progress_bar

    with progress_bar("decompressing") as tick:
        inputs = open_inputs(dump, logs, log_format=log_format, vm=vm, cache_dir=cache_dir,
                             binary=binary, progress=tick)
    for w in inputs.warnings:
        click.echo(f"vdecode: warning: {w}", err=True)
    return inputs


_LOG_HELP = ("QMP log taken before the dump (any format `vdecode log` reads); repeat for several, "
             "oldest first.")
_CACHE_HELP = ("Where compressed inputs are decompressed (default $VDECODE_CACHE, else "
               "$XDG_CACHE_HOME/vdecode, else ~/.cache/vdecode; docs/cache.md).")
_TRACE_HELP = ("A QEMU trace of the same run, ending at the dump (docs/trace.md): when each "
               "in-flight chain was taken, what the pause completed.")
_QEMU_HELP = ("The QEMU release that ran (e.g. 10.0.2), for a guest dump alone; a QEMU core or a "
              "log's greeting says it themselves. Default: the newest profile.")


def _profile_notes(profile) -> list[str]:
    """Which profile answers and why, and a warning when it is not the release's own."""
    out = [f"profile formats/qemu-{profile.version} (QEMU {profile.release}): {profile.reason}"]
    return out + ([f"warning: {profile.warning}"] if profile.warning else [])


def _assumed_release(profile, space) -> str:
    """The note for a guest dump alone: the greeting names a release nothing in the inputs did.
    The guest firmware's SMBIOS machine type (``pc-q35-7.2``) is said beside it: it does not name
    the release that ran (a newer QEMU runs older machine types), only the oldest it can be."""
    from vdecode.space.firmware import machine_version, smbios_system

    system = smbios_system(space) if space is not None else None
    mv = machine_version(system)
    hint = (f" (the guest's machine type {system.version} says QEMU {mv[0]}.{mv[1]} or later)"
            if mv and system is not None else "")
    return (f"the greeting says QEMU {profile.release}: assumed QEMU {profile.release}, no core or "
            f"log names the release; give --qemu VERSION{hint}")

#: ``--queue``: a queue index. QMP carries it as a uint16, but QEMU never has more than
#: VIRTIO_QUEUE_MAX (1024, include/hw/virtio/virtio.h, 7.2 to 10.0) queues per device, so 1024 and
#: up can be in no dump: the option parser refuses them (status 2) with the bound in its message,
#: while 0-1023 on a device without that queue is NotInInput (status 3, listing the queues there).
QUEUE_INDEX = click.IntRange(0, 1023)

_BINARY_HELP = ("For a QEMU process core: the qemu-system-* executable that ran (default: the path "
                "the core names); used only if its build-id is the core's.")


def _options(*options):
    """The decorator applying ``options`` in the order they are given (as written one above the
    other): the blocks several commands share."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


_log_options = _options(
    click.option("--log", "logs", multiple=True, type=click.Path(dir_okay=False), help=_LOG_HELP),
    click.option("--log-format", default=None, help="Format of --log, when sniffing is not enough."),
    click.option("--vm", default=None, help="The VM to take from a log with several."))
# the inputs of view, qmp, bundle and report: a dump (or a core and a guest dump) and logs
_dumps_and_logs = _options(
    click.argument("dumps", metavar="DUMP [GUEST_DUMP]", nargs=-1, required=True,
                   type=click.Path(dir_okay=False)),
    _log_options)
_binary_and_cache_options = _options(
    click.option("--binary", type=click.Path(dir_okay=False), default=None, help=_BINARY_HELP),
    click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=_CACHE_HELP))


@cli.command("info")
@click.argument("dump", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@_binary_and_cache_options
def info_command(dump: str, as_json: bool, binary: str | None, cache_dir: str | None) -> None:
    """What a dump holds: format, machine, RAM ranges, vCPUs, VMCOREINFO, page counts; for a
    QEMU core also the signal, the crashing thread, the binary and what the core left out."""
    from vdecode.render.info import render_info_json, render_info_text

    from vdecode.space.firmware import smbios_system

    opened = _open_inputs(dump, (), None, None, cache_dir, binary).dump
    with opened:
        info = dict(opened.info)
        info.setdefault("format", opened.format)
        info.setdefault("file", opened.path)
        system = smbios_system(opened.space)
        if system is not None:
            info["smbios"] = {"manufacturer": system.manufacturer, "product": system.product,
                              "version": system.version, "entry_point": system.entry_point}
    click.echo(render_info_json(info) if as_json else render_info_text(info, _output_width()),
               nl=False)


@cli.command("trace")
@click.argument("trace_file", metavar="TRACE", type=click.Path(dir_okay=False))
@click.option("--core", default=None, type=click.Path(dir_okay=False),
              help="A QEMU process core of the same run: names each device (QOM path) and queue.")
@click.option("--json", "as_json", is_flag=True, help="JSON, one record a queue (docs/trace.md).")
@click.option("--binary", type=click.Path(dir_okay=False), default=None, help=_BINARY_HELP)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=_CACHE_HELP)
def trace_command(trace_file: str, core: str | None, as_json: bool, binary: str | None,
                  cache_dir: str | None) -> None:
    """QEMU's trace (log backend: -trace enable=virtqueue_* ... -D FILE) as a per-queue timeline:
    what each queue took, returned and held, and what it held when the VM paused."""
    from vdecode.errors import UnsupportedInput
    from vdecode.reconstruct.timeline.queues import build_timeline
    from vdecode.render.trace_view import render_trace_json, render_trace_text
    from vdecode.sources.trace import read_trace

    trace = read_trace(trace_file)
    devices, vq_size = None, None
    if core is not None:
        opened = _open_inputs(core, (), None, None, cache_dir, binary).dump
        with opened:
            if not opened.queue_arrays:
                raise UnsupportedInput(core, f"not a QEMU process core with virtio devices "
                                             f"({opened.format}): --core needs one to name the "
                                             f"trace's devices and queues")
            devices = {vdev: (path, arr) for path, vdev, arr, _ in opened.queue_arrays}
            vq_size = opened.queue_arrays[0][3]
    timeline = build_timeline(trace, devices=devices, vq_size=vq_size)
    click.echo(render_trace_json(timeline) if as_json else render_trace_text(timeline, _output_width()),
               nl=False)


@cli.command("qmp")
@click.argument("dumps", metavar="[DUMP [GUEST_DUMP]]", nargs=-1, type=click.Path(dir_okay=False))
@_log_options
@click.option("--socket", "socket_path", default=None, type=click.Path(),
              help="Serve a unix socket (for qmp-shell or qemu.qmp) instead of stdin/stdout.")
@click.option("--connections", type=click.IntRange(min=1), default=None, hidden=True,
              help="Stop after this many socket connections (tests).")
@click.option("--qemu", "qemu_release", default=None, metavar="VERSION", help=_QEMU_HELP)
@_binary_and_cache_options
def qmp_command(dumps: tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                vm: str | None, socket_path: str | None, connections: int | None,
                qemu_release: str | None, binary: str | None, cache_dir: str | None) -> None:
    """An offline QMP monitor answering QEMU 7.2's x-query-virtio* as at the dump instant.

    DUMP is a guest dump, a QEMU process core or a bundle; a QEMU core may be followed (or
    preceded) by a guest dump of the same instant, for the guest RAM the core does not hold.
    Without DUMP, --log alone answers QEMU's state as of the log's last replies (a rolling log
    of vdecode record after the VM is gone); nothing reads guest RAM then."""
    from vdecode.output_paths import check_output
    from vdecode.reconstruct.qmp.error_replies import qmp_error
    from vdecode.render.qmp_stream import serve_stream, serve_unix_socket

    if not dumps and not logs:
        raise click.UsageError("give a DUMP, or --log LOG for QEMU's state as of the log")
    if socket_path:
        check_output(socket_path, "the socket (--socket)", [*dumps, *logs, binary], socket=True)
    machine = _open_machine(dumps, logs, log_format, vm, cache_dir, binary, qemu_release)
    if not dumps:
        end = machine.session.log_end
        at = "" if end is None else " (" + __import__("datetime").datetime.fromtimestamp(
            end, __import__("datetime").timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") + ")"
        click.echo(f"vdecode: note: no dump: QEMU's state as of the log's last replies{at}; "
                   f"guest RAM is not read", err=True)
    session = machine.session
    opened, knowledge, profile = session.dump, session.knowledge, session.profile
    notes = session.notes
    # which profile answers: said when no core or log names the release (or they name none shipped)
    said = _profile_notes(profile) if profile.warning or not (opened.qemu or knowledge) else []
    if not (opened.qemu or knowledge or qemu_release):
        said.append(_assumed_release(profile, opened.space))
    if opened.absent is not None:     # first: every reply below is built on this input
        said = [p.headline()
                for p in opened.absent.parts] + said
    for n in [*said, *notes]:
        click.echo(f"vdecode: {n}" if n.startswith("warning: ") else f"vdecode: note: {n}", err=True)

    monitors: list = []          # one per connection; each goes on from the last one's state

    def flush_notes() -> None:
        for n in monitors[-1].take_notes():
            click.echo(f"vdecode: note: {n}", err=True)

    def parse_error(msg: str) -> dict:
        return qmp_error(profile, "json_parse", msg).reply()

    def new_monitor():
        monitors.append(machine.monitor(monitors[-1].machine if monitors else None))
        return monitors[-1]

    if socket_path:
        serve_unix_socket(socket_path, new_monitor, parse_error, flush_notes, connections)
    else:
        serve_stream(new_monitor(), sys.stdin.buffer, sys.stdout.buffer, parse_error, flush_notes)


@cli.command("profile")
@click.argument("debugfile", metavar="DEBUGFILE|CORE", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Where to write the layout profile (e.g. formats/qemu-7.2/layout-x86_64.json); "
                   "needed for DWARF; for a QEMU core the default is standard output.")
@click.option("--like", "template", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Profile whose structs and fields to look up (default: the shipped x86_64 one).")
@click.option("--binary", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The qemu-system-* executable the profile is for: its build-id keys the profile "
                   "(default: DEBUGFILE's own build-id, as a -dbgsym .debug file carries).")
@click.option("--source", "source_text", default=None, help="The profile's 'source' text.")
def profile_command(debugfile: str, output: str | None, template: str | None, binary: str | None,
                    source_text: str | None) -> None:
    """Derive a QEMU struct layout profile from DWARF (a .debug file or a probe object), or from a
    QEMU process core's own structures (each field with its evidence and confidence)."""
    import json

    from vdecode.errors import OutputError
    from vdecode.output_paths import check_output

    with open(debugfile, "rb") as f:
        head = f.read(18)
    packed = next((k for m, k in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b", "gzip"),
                                  (b"\xfd7zXZ", "xz")) if head.startswith(m)), None)
    if packed:                           # a compressed core (DWARF files are not compressed)
        from vdecode.sources.compressed import decompress_to_cache

        if output:
            check_output(output, "the profile (-o)", [debugfile])
        _profile_of_core(str(decompress_to_cache(debugfile, packed)), output, debugfile)
        return
    if head[:4] == b"\x7fELF" and int.from_bytes(head[16:18], "little") == 4:     # ET_CORE
        if output:
            check_output(output, "the profile (-o)", [debugfile])
        _profile_of_core(debugfile, output, debugfile)
        return
    if output is None:
        raise click.UsageError("-o/--output is needed for a layout derived from DWARF")

    from vdecode.profiles import load_profile
    from vdecode.sources.dwarf_profile import dumps_profile, profile_from_dwarf, read_build_id_file

    check_output(output, "the profile (-o)", [debugfile, template, binary])
    if template:
        with open(template, "rb") as f:
            like = json.load(f)
    else:
        like = load_profile("7.2").table("layout-x86_64")
    meta: dict = {"generated_by": f"vdecode profile {debugfile} -o {output}"}
    build_id = read_build_id_file(binary or debugfile)
    if build_id:
        meta["build_ids"] = [build_id]
    elif binary:
        raise click.ClickException(f"{binary}: no GNU build-id note")
    if source_text:
        meta["source"] = source_text
    prof = profile_from_dwarf(debugfile, like, **meta)
    try:
        with open(output, "w", encoding="utf-8") as out:
            out.write(dumps_profile(prof))
    except OSError as err:
        raise OutputError(output, f"cannot write the profile: {err.strerror or err}") from None
    click.echo(f"{output}: {len(prof['structs'])} structs"
               + (f", build-id {build_id}" if build_id else ", no build-id (kept the template's)"))


def _profile_of_core(path: str, output: str | None, given: str) -> None:
    """``vdecode profile CORE``: the layout derived from the core; checked against the shipped
    profile of its build-id when there is one (a line on stderr)."""
    from vdecode.sources.dwarf_profile import dumps_profile
    from vdecode.sources.elf_dump import read_elf
    from vdecode.sources.files import FileView
    from vdecode.sources.qemu_core import derive_core_layout
    from vdecode.sources.qemu_core.derive import compare_layouts, layout_with_evidence
    from vdecode.space.qemu_core import host_space

    with FileView(path) as view:
        elf = read_elf(view)
        derived, shipped = derive_core_layout(view, elf, host_space(view, elf))
    text = dumps_profile(layout_with_evidence(derived))
    if output:
        from vdecode.errors import OutputError

        try:
            with open(output, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as err:
            raise OutputError(output, f"cannot write the profile: {err.strerror or err}") from None
    else:
        click.echo(text, nl=False)
    counts = {c: 0 for c in ("anchored", "checked", "template")}
    for f in derived.data["derived"]["fields"].values():
        counts[f["confidence"]] += 1
    click.echo(f"{output or given}: layout derived from the core, template "
               f"{derived.data['derived']['template']}:\n  {counts['anchored']} fields anchored, "
               f"{counts['checked']} checked, {counts['template']} placed by the template alone",
               err=True)
    if shipped is not None:
        cmp = compare_layouts(derived, shipped)
        click.echo(f"checked against {shipped.source} (it lists the core's build-id):\n  "
                   f"{len(cmp['agree'])} fields the reader uses agree, {len(cmp['differ'])} "
                   f"differ, {len(cmp['unchecked'])} differ unchecked"
                   + "".join(f"\n  differs: {x}" for x in cmp["differ"])
                   + "".join(f"\n  differs unchecked (nothing in the core to check it on): {x}"
                             for x in cmp["unchecked"]), err=True)


@cli.command("log")
@click.argument("log_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--vm", default=None,
              help="The VM (name, UUID or monitor key) to show; 'all' keeps every one.")
@click.option("--log-format", default=None,
              help="The log's format when sniffing is not enough: jsonl, kubevirt, journald, "
                   "libvirt, trace, qemu.qmp, qmp-shell, virsh, arrows, wire.")
@click.option("--json", "as_json", is_flag=True,
              help='Write the captures\' JSON-lines transcript ({"t", "dir", "msg"} a line).')
def log_command(log_file: str, vm: str | None, log_format: str | None, as_json: bool) -> None:
    """What a QMP log holds: format, monitors/VMs, time span, virtio devices, exchanges."""
    from vdecode.errors import QmpLogError
    from vdecode.render.log_view import render_log_jsonl, render_log_text
    from vdecode.sources.qmp_log import describe_monitor, read_qmp_log

    log = read_qmp_log(log_file, log_format, None if vm in (None, "all") else vm)
    for w in log.warnings:
        click.echo(f"vdecode: warning: {w}", err=True)
    if as_json:
        vms = {m.vm or m.key.split("#")[0] for m in log.monitors}
        if vm is None and len(vms) > 1:
            listing = "; ".join(describe_monitor(m) for m in log.monitors)
            raise QmpLogError(log_file, f"{len(vms)} VMs in this log, choose one with --vm "
                                        f"(or --vm all): {listing}")
        batch: list[str] = []
        for line in render_log_jsonl(log):
            batch.append(line)
            if len(batch) >= 1000:
                click.echo("".join(batch), nl=False)
                batch.clear()
        click.echo("".join(batch), nl=False)
    else:
        click.echo(render_log_text(log, _output_width()), nl=False)


@cli.command("view")
@_dumps_and_logs
@click.option("--device", default=None, help="QOM path, device name, id or path component.")
@click.option("--queue", type=QUEUE_INDEX, default=None,
              help="Decode this queue (0-1023): rings, chains, buffers.")
@click.option("--json", "as_json", is_flag=True, help="JSON (docs/view-json.md) instead of text.")
@click.option("--all", "show_all", is_flag=True, help="Idle queues and every chain too.")
@click.option("-v", "--verbose", is_flag=True,
              help="Full form: status, features, descriptor tables, used entries, evidence.")
@click.option("--qemu", "qemu_release", default=None, metavar="VERSION", help=_QEMU_HELP)
@click.option("--trace", "trace_file", default=None, type=click.Path(dir_okay=False),
              help=_TRACE_HELP)
@_binary_and_cache_options
def view_command(dumps: tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                 vm: str | None, device: str | None, queue: int | None, as_json: bool,
                 show_all: bool, verbose: bool, qemu_release: str | None, trace_file: str | None,
                 binary: str | None, cache_dir: str | None) -> None:
    """The post-mortem view: devices, queues, chains and what is wrong (the default command)."""
    from vdecode.command_line import run_view

    run_view(dumps, logs, log_format=log_format, vm=vm, device=device, queue=queue,
             as_json=as_json, show_all=show_all, verbose=verbose, qemu_release=qemu_release,
             binary=binary, cache_dir=cache_dir, trace=trace_file, echo=click.echo)


@cli.command("bundle")
@_dumps_and_logs
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The bundle to write (an ELF core; .vdb by convention).")
@click.option("--full-buffers", is_flag=True,
              help="Keep whole pending/in-flight buffers (bounded), not only their first bytes.")
@click.option("--redact", is_flag=True,
              help="Zero buffer payloads (device request headers stay) for data you may not share.")
@_binary_and_cache_options
def bundle_command(dumps: tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                   vm: str | None, output: str, full_buffers: bool, redact: bool,
                   binary: str | None, cache_dir: str | None) -> None:
    """Write one small file (an ELF core) that reproduces vdecode's answers for a bug report."""
    from vdecode.output_paths import check_output
    from vdecode.api import machine_of
    from vdecode.render.bundle_writer import recording, write_bundle

    check_output(output, "the bundle (-o)", [*dumps, *logs, binary])
    inputs = _open_inputs(dumps, logs, log_format, vm, cache_dir, binary)
    # the machine reads through a recorder: the bundle keeps what its answers read; no carving
    with machine_of(recording(inputs), carve=False) as machine:
        report = write_bundle(output, machine, full_buffers=full_buffers, redact=redact, vm=vm)
    for n in report.notes:
        click.echo(f"vdecode: note: {n}", err=True)
    for x in report.limits:
        click.echo(f"vdecode: warning: left out: {x}", err=True)
    click.echo(f"{output}: {report.size} bytes, {report.kept_bytes} bytes of guest memory in "
               f"{report.runs} runs ({report.counts['ring_areas']} ring areas, "
               f"{report.counts['indirect_tables']} indirect tables, "
               f"{report.counts['buffers']} buffers)")


def _write_text(path: str, what: str, text: str) -> None:
    """Write an output file; an error writing it (a full disk) is one line, no half file left."""
    from vdecode.errors import OutputError

    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as err:
        import os
        try:
            os.unlink(path)
        except OSError:
            pass
        raise OutputError(path, f"cannot write {what}: {err.strerror or err}") from None


@cli.command("report")
@_dumps_and_logs
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="The HTML page to write (one self-contained file).")
@click.option("--device", default=None, help="Only this device (as the view's --device).")
@click.option("--queue", type=QUEUE_INDEX, default=None, help="Only this queue (0-1023).")
@click.option("--svg", "svg_path", default=None, type=click.Path(dir_okay=False),
              help="Write one queue's picture alone (an SVG file); needs --queue.")
@click.option("--qemu", "qemu_release", default=None, metavar="VERSION", help=_QEMU_HELP)
@click.option("--trace", "trace_file", default=None, type=click.Path(dir_okay=False),
              help=_TRACE_HELP + " Drawn as a timeline per queue.")
@_binary_and_cache_options
def report_command(dumps: tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                   vm: str | None, output: str | None, device: str | None, queue: int | None,
                   svg_path: str | None, qemu_release: str | None, trace_file: str | None,
                   binary: str | None, cache_dir: str | None) -> None:
    """One HTML page to attach to a bug report: each queue's ring drawn, the findings with their
    evidence, the log-versus-dump changes, the chains and the QMP replies (docs/report.md)."""
    from vdecode.output_paths import check_output

    if output is None and svg_path is None:
        raise click.UsageError("give -o FILE.html, --svg FILE.svg or both")
    if svg_path is not None and queue is None:
        raise click.UsageError("--svg draws one queue: give --queue (and --device when several "
                               "devices have it)")
    for path, what in ((output, "the report (-o)"), (svg_path, "the picture (--svg)")):
        if path is not None:
            check_output(path, what, [*dumps, *logs, binary, trace_file])
    from vdecode.render.report_html import render_report_html
    from vdecode.render.ring_svg import ring_svg

    with _open_machine(dumps, logs, log_format, vm, cache_dir, binary, qemu_release,
                       trace_file) as machine:
        if svg_path is not None:           # one queue: said before anything is read
            sel = machine.select(device, queue)
            held = [d.canonical_path for d in machine.session.machine.state.devices
                    if d.canonical_path in sel.paths and getattr(d.queues.get(queue), "vring_num",
                                                                 0)]
            if len(held) > 1:
                from vdecode.errors import NotInInput
                raise NotInInput("--svg", f"{len(held)} devices have queue {queue} "
                                          f"({'; '.join(held)}): choose one with --device")
        report = machine.report(device, queue)
    if svg_path is not None:
        (first, *_) = report.view.queue_detail
        _write_text(svg_path, "the picture", '<?xml version="1.0" encoding="UTF-8"?>\n'
                    + ring_svg(first, standalone=True))
        click.echo(f"{svg_path}: queue {queue} of {first.device}")
    if output is not None:
        page = render_report_html(report)
        _write_text(output, "the report", page)
        rings = page.count('<svg class="ring"')
        click.echo(f"{output}: {len(page.encode())} bytes, {rings} ring picture(s), "
                   f"{len(report.view.findings)} finding(s)")


@cli.command("triage")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON record per VM a line.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per VM.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default: the number of cores).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on this Dask scheduler (tcp://host:8786; needs vdecode[dask]).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to wait for --scheduler to answer.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=_CACHE_HELP)
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the fleet as one HTML page (one row per VM, grouped by verdict).")
@click.option("--pictures", is_flag=True,
              help="With --html: write each VM's report (vdecode report) beside it, in "
                   "FILE's name + '-vms/', linked from its row and its queues.")
def triage_command(paths: tuple[str, ...], as_json: bool, as_csv: bool, workers: int | None,
                   scheduler: str | None, timeout: float, cache_dir: str | None,
                   html_path: str | None, pictures: bool) -> None:
    """Many dumps at once: one record per VM, grouped by its worst finding (docs/triage.md)."""
    from vdecode.triage import output, run_triage

    if pictures and html_path is None:
        raise click.UsageError("--pictures goes with --html FILE")
    if html_path is not None:
        from vdecode.output_paths import check_output
        check_output(html_path, "the fleet page (--html)", paths)
    with output.progress_bar("triage") as tick:
        records = run_triage(list(paths), workers=workers, scheduler=scheduler,
                             cache_dir=cache_dir, progress=tick, timeout=timeout)
    if html_path is not None:
        _fleet_page(html_path, records, pictures, cache_dir)
    if as_json or as_csv:
        click.echo((output.render_jsonl if as_json else output.render_csv)(records), nl=False)
    else:
        tty = sys.stdout.isatty()
        width = _terminal_width(120) if tty else 120
        click.echo(output.render_table(records, width=width, color=tty), nl=False)


def _fleet_page(path: str, records: list, pictures: bool, cache_dir: str | None) -> None:
    """``triage --html``: the fleet page, and with ``--pictures`` each VM's report beside it
    (a VM whose inputs no longer open gets no link and a warning)."""
    import os
    import re

    from vdecode.render.fleet_html import render_fleet_html

    pages: dict[str, str] = {}
    if pictures:
        from vdecode.api import open as open_machine
        from vdecode.render.report_html import render_report_html

        folder = os.path.splitext(os.path.basename(path))[0] + "-vms"
        os.makedirs(os.path.join(os.path.dirname(path), folder), exist_ok=True)
        for r in records:
            ins = r["inputs"]
            if ins["dump"] is None:
                continue
            name = f"{folder}/{re.sub(r'[^A-Za-z0-9._-]', '_', r['vm'])}.html"
            try:
                dumps = [ins["dump"]] + ([ins["memory"]] if ins["memory"] else [])
                with open_machine(*dumps, log=ins["logs"], cache_dir=cache_dir) as machine:
                    page = render_report_html(machine.report())
            except VdecodeError as err:
                click.echo(f"vdecode: warning: {r['vm']}: no report: {err}", err=True)
                continue
            _write_text(os.path.join(os.path.dirname(path), name), "a VM's report", page)
            pages[r["vm"]] = name
    _write_text(path, "the fleet page", render_fleet_html(records, pages))
    click.echo(f"vdecode: wrote {path}" + (f" and {len(pages)} VM report(s) in {folder}/"
                                           if pictures else ""), err=True)


@cli.group("cache")
def cache_group() -> None:
    """The cache of decompressed inputs: what it holds, and clearing it (docs/cache.md)."""


def _cache_folder(cache_dir: str | None) -> str:
    from vdecode.sources.cache import default_cache_dir

    return cache_dir if cache_dir is not None else str(default_cache_dir())


@cache_group.command("list", short_help="What the cache holds: sizes, last use, source.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=_CACHE_HELP)
def cache_list_command(as_json: bool, cache_dir: str | None) -> None:
    """Each entry: size on disk, apparent size, last used, source file; the total and the cap."""
    import os
    import time

    from vdecode.render.cache_list import render_cache_json, render_cache_text
    from vdecode.sources.cache import ENV_MAX, cache_cap, entries

    folder = _cache_folder(cache_dir)
    found, cap = entries(folder), cache_cap()
    if as_json:
        click.echo(render_cache_json(found, folder, cap), nl=False)
    else:
        cap_from = f"${ENV_MAX}" if os.environ.get(ENV_MAX) else f"default, ${ENV_MAX} sets it"
        click.echo(render_cache_text(found, folder, cap, cap_from, time.time()), nl=False)


def _age(ctx, param, value: str | None) -> float | None:
    from vdecode.sources.cache import parse_age

    try:
        return None if value is None else parse_age(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@cache_group.command("clear", short_help="Remove entries: all, unused for an AGE, or of an input.")
@click.option("--older-than", callback=_age, default=None, metavar="AGE",
              help="Only entries last used longer ago than AGE (7d, 12h, 30m, 90s).")
@click.option("--input", "inputs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Only the entries made from FILE (any copy of it); repeatable.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=_CACHE_HELP)
def cache_clear_command(older_than: float | None, inputs: tuple[str, ...],
                        cache_dir: str | None) -> None:
    """Remove cache entries: all of them, or those --older-than or of an --input."""
    from vdecode.render.cache_list import render_cleared
    from vdecode.sources.cache import clear, fingerprint
    from vdecode.sources.flattened import flat_index_key

    folder = _cache_folder(cache_dir)
    keys = {k for f in inputs for k in (fingerprint(f), flat_index_key(f))} if inputs else None
    click.echo(render_cleared(clear(folder, older_than=older_than, keys=keys), folder), nl=False)


# --- record: the flight recorder (vdecode/record/, docs/record.md) ------------------------------

def _size(ctx, param, value: str) -> int:
    """``--max-size``: bytes, or with a k/M/G suffix (powers of 1024)."""
    text = value.strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    try:
        n = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 64M, 500k, 1G)") from None
    if n < 4096:
        raise click.BadParameter(f"{value} is too small (at least 4k: one snapshot must fit)")
    return n


@cli.command("record")
@click.argument("monitor", metavar="[QMP_SOCKET]", required=False)
@click.option("--virsh", "domain", default=None, metavar="DOMAIN",
              help="A libvirt domain: ask through 'virsh qemu-monitor-command DOMAIN' instead of "
                   "a QMP socket.")
@click.option("--connect", "uri", default=None, metavar="URI",
              help="virsh's connection URI (virsh -c URI), with --virsh.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The rolling log (JSON lines); rotated copies are OUTPUT.1 ... OUTPUT.K.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between snapshots.")
@click.option("--max-size", "max_size", default="64M", show_default=True, callback=_size,
              help="Bytes all the log files may take together (k, M, G suffixes).")
@click.option("--keep", type=click.IntRange(0, 99), default=1, show_default=True,
              help="Rotated files kept beside OUTPUT.")
@click.option("--snapshots", type=click.IntRange(min=1), default=None,
              help="Stop after this many snapshots (default: until QEMU goes away or a signal).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for the greeting and for each reply.")
def record_command(monitor: str | None, domain: str | None, uri: str | None, output: str,
                   interval: float, max_size: int, keep: int, snapshots: int | None,
                   timeout: float) -> None:
    """Keep a rolling QMP log of a running QEMU's virtio state, asking only what changes nothing.

    QMP_SOCKET is a second QMP monitor of the VM (-qmp unix:PATH,server=on,wait=off): a unix
    socket path, or HOST:PORT for TCP. Stops on SIGINT or SIGTERM and when QEMU goes away; the
    log then ends with the last complete snapshot. Read it back with
    'vdecode qmp DUMP --log OUTPUT.1 --log OUTPUT'."""
    import signal
    import textwrap

    from vdecode.output_paths import check_output
    from vdecode.record.monitor import QemuGone, SocketMonitor, VirshMonitor
    from vdecode.record.rolling import RollingLog
    from vdecode.record.run import Recorder
    from vdecode.space.absence import human_bytes

    if (monitor is None) == (domain is None):
        raise click.UsageError("give a QMP socket or --virsh DOMAIN (one of them)")
    if uri and domain is None:
        raise click.UsageError("--connect goes with --virsh")
    for path in [output, *(f"{output}.{i}" for i in range(1, keep + 1))]:
        check_output(path, "the log (-o)", [monitor])
    width = _output_width()

    def say(text: str) -> None:
        click.echo(textwrap.fill(f"vdecode: record: {text}", width, subsequent_indent="  ",
                                 break_on_hyphens=False, break_long_words=False), err=True)

    stopped: list[str] = []

    def on_signal(signum, frame) -> None:
        stopped.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            mon = (VirshMonitor(domain, timeout, uri=uri) if domain
                   else SocketMonitor(monitor, timeout))
        except QemuGone:
            raise _gone(monitor or domain) from None
        log = RollingLog(output, max_size, keep)
        try:
            rec = Recorder(mon, log, say)
            try:
                q = rec.start()
            except QemuGone:
                raise _gone(mon.where) from None
            release = ".".join(map(str, rec.version)) if rec.version else "of unknown version"
            say(f"QEMU {release} at {mon.where}: a snapshot every {interval:g} s into {output} "
                f"(at most {human_bytes(max_size)} with {keep} rotated; questions of "
                f"formats/qemu-{q.release}/record.json)")
            if q.warning:
                say(f"warning: {q.warning}")
            for rule in q.never:
                say(f"never asks {rule.command}: {rule.why}")
            out = rec.run(interval, lambda: stopped[0] if stopped else None, snapshots)
        finally:
            log.close()
            mon.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    when = ""
    if out.last is not None:
        import datetime
        when = (" of " + datetime.datetime.fromtimestamp(out.last, datetime.timezone.utc)
                .strftime("%H:%M:%S UTC"))
    say(f"stopped: {out.why}; {out.snapshots} snapshot{'s' if out.snapshots != 1 else ''}, "
        f"the last{when}; read with --log " + " --log ".join(out.files))


def _gone(where: str):
    from vdecode.errors import SetupError
    return SetupError(where, "QEMU closed the monitor before the recording started")
