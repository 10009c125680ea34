"""Every QMP log format, on real recordings (tests/data/logs/real, made by tools/record_logs.sh
with Debian 12's libvirt 9.0, QEMU 7.2, qemu.qmp 0.0.6 and socat) and hand-written samples after
the reference's verbatim examples (tests/data/logs/hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders.qmp_logs import journald_export, journald_json, kubevirt, libvirt_records
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.sources.qmp_log.sniff import FORMATS

DATA = Path(__file__).resolve().parent.parent / "data" / "logs"
REAL, HAND = DATA / "real", DATA / "hand"
GREETING_72 = {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7},
                                   "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"},
                       "capabilities": ["oob"]}}


def _pairs(mon):
    return [(x.command, x.arguments, x.reply) for x in mon.exchanges]


@pytest.mark.parametrize("name, fmt", [
    ("real/libvirtd.log", "libvirt"), ("real/virsh-compact.txt", "virsh"),
    ("real/virsh-pretty.txt", "virsh"), ("real/virsh-events.txt", "virsh"),
    ("real/virsh-events-pretty.txt", "virsh"), ("real/qemu-trace.log", "trace"),
    ("real/qmp-shell.txt", "qmp-shell"), ("real/qmp-shell-pretty.txt", "qmp-shell"),
    ("real/qmp-shell-l.log", "qmp-shell"), ("real/qmp-shell-pretty-l.log", "qmp-shell"),
    ("real/qemu-qmp-debug.log", "qemu.qmp"), ("real/socat-replies.txt", "wire"),
    ("real/socat-pretty.txt", "wire"), ("hand/arrows.txt", "arrows"),
    ("hand/libvirt-paste.log", "libvirt"), ("hand/journal-short.txt", "journald"),
    ("hand/kubevirt.log", "kubevirt"), ("hand/trace-iso.log", "trace"),
    ("hand/qemu-qmp-avocado.log", "qemu.qmp"), ("hand/wire-stdio.txt", "wire"),
    ("hand/qmp-shell-tty.txt", "qmp-shell"), ("hand/legacy-python-qmp.log", "qemu.qmp"),
    ("hand/avocado-vt-monitor.log", "wire"), ("hand/caps.replies", "virsh"),
    ("hand/syslog.txt", "journald"),
])
def test_format_is_sniffed_and_forcing_it_reads_the_same(name, fmt):
    log = read_qmp_log(DATA / name)
    assert log.format == fmt
    forced = read_qmp_log(DATA / name, fmt)
    assert [(_pairs(m), m.greeting) for m in forced.monitors] == \
        [(_pairs(m), m.greeting) for m in log.monitors]


def test_every_format_has_a_sample():
    tested = {"libvirt", "virsh", "trace", "qmp-shell", "qemu.qmp", "wire", "arrows", "journald",
              "kubevirt", "jsonl"}
    assert set(FORMATS) == tested


# --- format 4: libvirt, recorded from libvirt 9.0 -------------------------------------------------

def test_real_libvirt_log_three_sessions_two_vms():
    log = read_qmp_log(REAL / "libvirtd.log")
    assert log.warnings == []
    assert [(m.vm, len(m.exchanges)) for m in log.monitors] == \
        [("vd-guest1", 20), ("vd-guest2", 7), ("vd-guest1", 7)]
    for m in log.monitors:
        assert m.greeting == GREETING_72
        assert m.exchanges[0].request == {"execute": "qmp_capabilities", "id": "libvirt-1"}
        assert all(x.reply is not None and x.reply["id"] == x.request["id"] for x in m.exchanges)
    g1 = log.monitors[0]
    assert [e.name for e in g1.events] == ["RESUME", "STOP", "RESUME", "RESET", "RESET", "SHUTDOWN"]
    # each start counts libvirt's ids from libvirt-1 again (the trimmed start-up floods took the rest)
    ids = [[x.request["id"] for x in m.exchanges][:7] for m in log.monitors]
    assert ids[0] == ids[1] == ids[2] == ["libvirt-1", "libvirt-4", "libvirt-407", "libvirt-408",
                                          "libvirt-411", "libvirt-412", "libvirt-413"]


def test_real_libvirt_log_needs_vm_and_knows_it():
    from vdecode.errors import QmpLogError

    log = read_qmp_log(REAL / "libvirtd.log")
    with pytest.raises(QmpLogError) as err:
        LogKnowledge.from_log(log)
    assert str(err.value) == (
        f"{REAL / 'libvirtd.log'}: 2 VMs in this log, choose one with --vm: "
        "vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 (monitor 0x7fc070006180, 7 exchanges, 2 events); "
        "vd-guest2 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002 (monitor 0x7fc054007d00, 7 exchanges, 2 events)")
    k = LogKnowledge.from_log(log, "vd-guest1")
    assert k.monitor is log.monitors[2]          # the newest session of that VM
    assert k.qemu_version == (7, 2, 22)
    assert [n for n, _ in k.virtio_devices()] == ["virtio-rng", "virtio-balloon", "virtio-blk",
                                                  "virtio-serial"]
    only = read_qmp_log(REAL / "libvirtd.log", vm="vd-guest2")
    assert [m.vm for m in only.monitors] == ["vd-guest2"]


def test_real_virsh_replies_equal_the_libvirt_log():
    """virsh printed libvirt's re-serialisation of the replies the daemon logged."""
    log = {x.request["id"]: x.reply for m in read_qmp_log(REAL / "libvirtd.log").monitors[:1]
           for x in m.exchanges}
    for name in ("virsh-compact.txt", "virsh-pretty.txt"):
        v = read_qmp_log(REAL / name)
        [mon] = v.monitors
        assert mon.vm == "vd-guest1"
        for x in mon.exchanges:
            assert x.request is not None and x.command.startswith("x-query-virtio")
            assert x.reply == log[x.reply["id"]]


def test_real_virsh_events_plain_timestamped_and_pretty():
    stamped = read_qmp_log(REAL / "virsh-events.txt").monitors[0].events
    pretty = read_qmp_log(REAL / "virsh-events-pretty.txt").monitors[0].events
    assert [e.name for e in stamped] == [e.name for e in pretty]
    assert [e.data for e in stamped] == [e.data for e in pretty]
    assert stamped[0].t_log is not None and pretty[0].t_log is None
    assert pretty[0].t is not None and abs(pretty[0].t - stamped[0].t_log) < 0.01
    assert stamped[0].name == "STOP" and stamped[0].data == {}       # <null>


@pytest.mark.parametrize("wrap", [journald_json, journald_export, kubevirt])
def test_envelopes_of_the_real_libvirt_log_read_the_same(tmp_path, wrap):
    recs = libvirt_records(REAL / "libvirtd.log")
    out = tmp_path / "wrapped.log"
    data = wrap(recs)
    out.write_bytes(data if isinstance(data, bytes) else data.encode())
    plain = read_qmp_log(REAL / "libvirtd.log")
    wrapped = read_qmp_log(out)
    assert wrapped.format == ("kubevirt" if wrap is kubevirt else "journald")
    assert wrapped.warnings == []
    assert [(m.key, m.vm, m.greeting, _pairs(m), [(e.name, e.data) for e in m.events])
            for m in wrapped.monitors] == \
        [(m.key, m.vm, m.greeting, _pairs(m), [(e.name, e.data) for e in m.events])
         for m in plain.monitors]
    assert [x.t for x in wrapped.exchanges] == pytest.approx([x.t for x in plain.exchanges])


def test_libvirt_paste_carets_line_numbers_and_error_lines():
    log = read_qmp_log(HAND / "libvirt-paste.log")
    assert log.warnings == []
    by_key = {m.key: m for m in log.monitors}
    getfd = by_key["0x7faa9003ebf0"].exchanges
    assert [(x.request, x.reply, x.t) for x in getfd] == [(
        {"execute": "getfd", "arguments": {"fdname": "migrate"}, "id": "libvirt-390"},
        {"return": {}, "id": "libvirt-390"}, 1646846974.247)]
    assert [e.name for e in by_key["0x7f0fd00028a0"].events] == ["STOP"]
    nova = by_key["0x7f769405e470"]
    assert nova.greeting["QMP"]["version"]["package"] == "v7.0.0-1253-g2417cbd591"
    assert [e.name for e in nova.events] == ["DEVICE_DELETED"]   # Line [ twin not counted
    assert LogKnowledge(nova).virtio_devices() == [(None, "/machine/peripheral/virtio-disk1/virtio-backend")]


def test_journal_short_output_replies_only():
    log = read_qmp_log(HAND / "journal-short.txt")
    [mon] = log.monitors
    assert [e.name for e in mon.events] == ["SPICE_CONNECTED"]
    assert [x.request for x in mon.exchanges] == [None, None]
    assert log.warnings == [
        f"{HAND / 'journal-short.txt'} line 3: reply with id \"libvirt-52\" answers no logged command",
        f"{HAND / 'journal-short.txt'} line 4: reply with id \"libvirt-53\" answers no logged command"]


def test_kubevirt_split_io_write_and_other_components():
    log = read_qmp_log(HAND / "kubevirt.log")
    assert log.warnings == []
    [ev_mon, cmd_mon] = log.monitors
    assert ev_mon.events[0].data["path"] == "/machine/peripheral/ua-default/virtio-backend"
    [x] = cmd_mon.exchanges
    assert x.request == {"execute": "device_del", "arguments": {"id": "ua-dyniface1"},
                         "id": "libvirt-30"}
    assert x.reply == {"return": {}, "id": "libvirt-30"}
    assert x.t == pytest.approx(1739296581.229)


# --- formats 6, 7: qmp-shell, qemu.qmp, trace (real) ------------------------------------------------

def test_real_qmp_shell_transcript_log_and_pretty_agree():
    shell = read_qmp_log(REAL / "qmp-shell.txt").monitors[0]
    logged = read_qmp_log(REAL / "qmp-shell-l.log").monitors[0]
    assert _pairs(shell) == _pairs(logged)
    assert [x.command for x in shell.exchanges] == [
        "x-query-virtio", "x-query-virtio-queue-status", "x-query-virtio-queue-status", "stop", "cont"]
    assert shell.exchanges[2].reply == {"error": {"class": "GenericError",
                                                  "desc": "Invalid virtqueue number 7"}}
    assert [e.name for e in shell.events] == ["STOP", "RESUME"]     # printed as Python reprs
    pretty = read_qmp_log(REAL / "qmp-shell-pretty.txt").monitors[0]
    pretty_l = read_qmp_log(REAL / "qmp-shell-pretty-l.log").monitors[0]
    assert _pairs(pretty) == _pairs(pretty_l)
    assert [x.command for x in pretty.exchanges] == ["x-query-virtio-status", "query-status"]


def test_qmp_shell_typed_commands_in_shell_syntax():
    p = HAND / "qmp-shell-tty.txt"
    log = read_qmp_log(p)
    [mon] = log.monitors
    assert [(x.request, None if x.reply is None else list(x.reply)) for x in mon.exchanges] == [
        ({"execute": "query-cpu-model-expansion",
          "arguments": {"type": "full", "model": {"name": "rv64"}}}, ["return"]),
        ({"execute": "x-query-virtio-queue-status",
          "arguments": {"path": "/machine/peripheral/net0/virtio-backend", "queue": 1}}, ["return"]),
        ({"execute": "stop", "arguments": {}}, ["return"]),
        ({"execute": "query-kvm", "arguments": {}}, ["return"]),
        ({"execute": "quit", "arguments": {}}, None)]
    assert [(e.name, e.t) for e in mon.events] == [("STOP", 1700555312.086122)]
    assert log.warnings == [f"{p} line 8: qmp-shell command not understood: argument 'path' is "
                            "not key=value"]


def test_real_qemu_qmp_debug_log():
    log = read_qmp_log(REAL / "qemu-qmp-debug.log")
    [mon] = log.monitors
    assert mon.key == "vd" and mon.greeting == GREETING_72
    assert [x.request.get("id") for x in mon.exchanges] == \
        [None] + [f"__qmp#{i:05d}" for i in range(5)]
    assert all(x.reply is not None for x in mon.exchanges)
    assert [e.name for e in mon.events] == ["STOP", "RESUME"]


def test_real_trace_pairs_per_monitor_pointer():
    log = read_qmp_log(REAL / "qemu-trace.log")
    shell = read_qmp_log(REAL / "qmp-shell-l.log").monitors[0]
    cmds = {m.key: [x.command for x in m.exchanges] for m in log.monitors}
    assert all(x.reply is not None for x in log.exchanges)
    # the qmp-shell session (after its query-commands) is there, traced by QEMU itself
    first = log.monitors[0]
    assert [(x.command, x.reply) for x in first.exchanges if x.command not in
            ("qmp_capabilities", "query-commands")] == \
        [(x.command, x.reply) for x in shell.exchanges]
    assert sum("x-query-virtio-status" in c for c in cmds.values()) == 2
    assert all(m.greeting == GREETING_72 for m in log.monitors)


def test_trace_iso_prefix_and_other_trace_events():
    log = read_qmp_log(HAND / "trace-iso.log")
    assert log.warnings == []
    [mon] = log.monitors
    assert [(x.command, x.t) for x in mon.exchanges] == [
        ("qmp_capabilities", 1665750359.529763), ("x-query-virtio-status", 1753123408.089797)]
    assert mon.exchanges[1].reply["error"]["desc"] == "No such device"


def test_avocado_qemu_qmp_log_without_dates():
    log = read_qmp_log(HAND / "qemu-qmp-avocado.log")
    [mon] = log.monitors
    assert mon.greeting["QMP"]["version"]["package"] == "v8.2.0-rc0"
    assert [(x.command, x.reply) for x in mon.exchanges] == [
        ("qmp_capabilities", {"return": {}}), ("quit", {"return": {}})]
    assert [(e.name, e.t, e.t_log) for e in mon.events] == [("RESUME", 1700555312.086122, None)]


# --- formats 2, 3: wire, arrows ---------------------------------------------------------------------

def test_real_socat_piped_replies_only():
    log = read_qmp_log(REAL / "socat-replies.txt")
    [mon] = log.monitors
    assert mon.greeting == GREETING_72 and log.warnings == []
    assert [x.request for x in mon.exchanges] == [None, None, None]
    assert mon.exchanges[0].reply == {"return": {}}
    assert [d["name"] for d in mon.exchanges[1].reply["return"]] == \
        ["virtio-serial", "virtio-balloon", "virtio-rng"]


def test_real_pretty_monitor_objects_by_brace_balance():
    log = read_qmp_log(REAL / "socat-pretty.txt")
    [mon] = log.monitors
    assert mon.greeting == GREETING_72 and log.warnings == []
    assert [e.name for e in mon.events] == ["STOP", "RESUME"]
    replies = [x.reply for x in mon.exchanges]
    assert replies[0] == {"return": {}} and replies[-1]["return"]["status"] == "running"
    assert replies[3]["return"]["name"] == "virtio-rng"


def test_wire_typed_quirks():
    p = HAND / "wire-stdio.txt"
    log = read_qmp_log(p)
    [mon] = log.monitors
    assert [(x.command, None if x.reply is None else list(x.reply)[0]) for x in mon.exchanges] == [
        ("qmp_capabilities", "return"), ("netdev_add", "return"), ("x-query-virtio", "return"),
        ("x-query-virtio-status", "error"), (None, "error")]
    assert mon.exchanges[2].request == {"execute": "x-query-virtio"}     # single-quoted
    assert mon.exchanges[3].arguments == {"path": "/machine/peripheral/net0/virtio-backend"}
    assert [e.name for e in mon.events] == ["NIC_RX_FILTER_CHANGED"]
    assert log.warnings == [
        f"{p} line 1: not QMP JSON, skipped: $ qemu-system-x86_64 -S -display none -qmp stdio",
        f"{p} line 2: not QMP JSON, skipped: qemu-system-x86_64: warning: TCG doesn't support "
        "requested f...",
        f"{p} line 14: object never closes before the next one, skipped"]


def test_arrows_docs_comment_prefix_and_elision():
    p = HAND / "arrows.txt"
    log = read_qmp_log(p)
    [mon] = log.monitors
    assert [(x.request, x.reply) for x in mon.exchanges] == [
        ({"execute": "query-kvm", "id": "example"},
         {"return": {"enabled": True, "present": True}, "id": "example"}),
        ({"execute": "x-query-virtio-status",
          "arguments": {"path": "/machine/peripheral/crypto0/virtio-backend"}},
         {"return": {"name": "virtio-crypto", "device-id": 20, "num-vqs": 2}}),
        ({"execute": "qmp_capabilities"}, {"return": {}}),
        ({"execute": "x-query-virtio-queue-status",
          "arguments": {"path": "/machine/peripheral-anon/device[1]/virtio-backend", "queue": 0}},
         None)]
    assert [e.name for e in mon.events] == ["POWERDOWN"]
    assert log.warnings == [f"{p} line 23: QMP message is not JSON: Expecting property name "
                            "enclosed in double quotes: line 1 column 36 (char 35)"]


def test_jsonl_with_monitor_names(tmp_path):
    p = tmp_path / "two.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        {"t": 1.0, "dir": "->", "msg": {"execute": "x-query-virtio", "id": 1}, "mon": "a", "vm": "one"},
        {"t": 1.5, "dir": "->", "msg": {"execute": "x-query-virtio", "id": 1}, "mon": "b", "vm": "two"},
        {"t": 2.0, "dir": "<-", "msg": {"return": [], "id": 1}, "mon": "b", "vm": "two"},
        {"t": 2.5, "dir": "<-", "msg": {"return": [], "id": 1}, "mon": "a", "vm": "one"},
    ]))
    log = read_qmp_log(p)
    assert [(m.key, m.vm, [(x.t, x.t_reply) for x in m.exchanges]) for m in log.monitors] == [
        ("a", "one", [(1.0, 2.5)]), ("b", "two", [(1.5, 2.0)])]


def test_legacy_python_qmp_reprs():
    log = read_qmp_log(HAND / "legacy-python-qmp.log")
    assert log.warnings == []
    assert [(x.request, x.reply) for x in log.exchanges] == [
        ({"execute": "qmp_capabilities"}, {"return": {}}),
        ({"execute": "x-query-virtio-status",
          "arguments": {"path": "/machine/peripheral/net0/virtio-backend"}},
         {"return": {"name": "virtio-net", "broken": False, "vhost-dev": None}})]


def test_avocado_vt_monitor_log_times_and_random_ids():
    log = read_qmp_log(HAND / "avocado-vt-monitor.log")
    [mon] = log.monitors
    assert mon.greeting is not None and log.warnings == []
    assert [(x.command, x.t, x.reply["id"]) for x in mon.exchanges] == [
        ("qmp_capabilities", 1605766593, "Fb2k1qzD"), ("device_del", 1605766594, "R44XYgQ0")]
    assert [(e.name, e.t_log) for e in mon.events] == [("DEVICE_DELETED", 1605766595)]


def test_libvirt_replies_file_pretty_objects_blank_separated():
    log = read_qmp_log(HAND / "caps.replies")
    k = LogKnowledge.from_log(log)
    assert [x.command for x in log.exchanges] == ["qmp_capabilities", "query-version"]
    assert k.qemu_version == (7, 2, 0) and k.qemu_package == "v7.2.0"     # from query-version


def test_mailed_libvirt_paste_quoted_printable_and_quoted(tmp_path):
    """A libvirt paste as a mail archive shows it: QP-encoded (soft breaks mid-JSON), '> ' quoted."""
    import quopri

    src = (HAND / "libvirt-paste.log").read_bytes()
    mail = tmp_path / "mail.txt"
    mail.write_text("On Wed, Mar 9, 2022 someone wrote:\n" +
                    "".join(f"> {line}\n" for line in quopri.encodestring(src).decode().splitlines()))
    assert "mon=3D0x7faa9003ebf0" in mail.read_text()
    got, want = read_qmp_log(mail), read_qmp_log(HAND / "libvirt-paste.log")
    assert got.format == "libvirt" and got.warnings == []
    assert [(m.key, m.greeting, _pairs(m), [e.raw for e in m.events]) for m in got.monitors] == \
        [(m.key, m.greeting, _pairs(m), [e.raw for e in m.events]) for m in want.monitors]


def test_html_escaped_arrows_paste(tmp_path):
    p = tmp_path / "page.txt"
    p.write_text("-&gt; { &quot;execute&quot;: &quot;query-status&quot; }\n"
                 "&lt;- { &quot;return&quot;: { &quot;status&quot;: &quot;running&quot; } }\n")
    log = read_qmp_log(p)
    assert log.format == "arrows"
    assert [(x.request, x.reply) for x in log.exchanges] == [
        ({"execute": "query-status"}, {"return": {"status": "running"}})]


def test_syslog_output_with_rsyslog_escapes():
    log = read_qmp_log(HAND / "syslog.txt")
    assert log.warnings == []
    assert [(x.request, x.reply["return"]["status"]) for x in log.exchanges] == [
        ({"execute": "query-status", "id": "libvirt-391"}, "running")]     # IO_WRITE twin dropped


def test_info_level_libvirt_log_has_no_greeting_or_names(tmp_path):
    """At info level libvirt logs the probes only: no ``Line [`` greeting, no VM names."""
    with open(REAL / "libvirtd.log", newline="") as f:
        info = [line for line in f if ": debug : " not in line]
    p = tmp_path / "info.log"
    with open(p, "w", newline="") as f:
        f.writelines(info)
    log = read_qmp_log(p)
    plain = read_qmp_log(REAL / "libvirtd.log")
    assert log.warnings == []
    assert [(m.key, m.vm, m.greeting) for m in log.monitors] == \
        [(m.key, None, None) for m in plain.monitors]
    assert [_pairs(m) for m in log.monitors] == [_pairs(m) for m in plain.monitors]


def test_libvirt_taint_lines_give_uuids_for_vm_selection():
    log = read_qmp_log(REAL / "libvirtd.log", vm="6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002")
    assert [(m.vm, m.vm_uuid) for m in log.monitors] == \
        [("vd-guest2", "6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002")]
    k = LogKnowledge.from_log(read_qmp_log(REAL / "libvirtd.log"),
                              "6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001")
    assert k.monitor.key == "0x7fc070006180"
