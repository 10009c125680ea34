"""The offline monitor's protocol: negotiation, argument errors, ids, parse errors, a qemu.qmp
client on --socket. Texts are QEMU 7.2's (qapi/qobject-input-visitor.c, qapi/qmp-dispatch.c)."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from tests.reconstruct.fidelity import run_qmp

VIRTIO_ID = "/machine/peripheral-anon/device[0]/virtio-backend"


@pytest.fixture(scope="module")
def basic_args(captures):
    cap = captures["basic"]
    return [str(cap.dump("elf")), "--log", str(cap.log("early"))]


def _replies(lines):
    return [line for line in lines if line]


def test_greeting_negotiation_and_errors(basic_args):
    reqs = [
        {"execute": "x-query-virtio", "id": 1},
        {"execute": "qmp_capabilities", "id": 2},
        {"execute": "qmp_capabilities", "id": 3},
        {"execute": "query-status", "id": 4},
        {"execute": "x-query-virtio-queue-status", "arguments": {"path": VIRTIO_ID}, "id": 5},
        {"execute": "x-query-virtio-queue-status",
         "arguments": {"path": VIRTIO_ID, "queue": "1"}, "id": 6},
        {"execute": "x-query-virtio-queue-status",
         "arguments": {"path": VIRTIO_ID, "queue": 65536}, "id": 7},
        {"execute": "x-query-virtio-queue-status",
         "arguments": {"path": VIRTIO_ID, "queue": -1}, "id": 8},
        {"execute": "x-query-virtio-queue-status",
         "arguments": {"path": 3, "queue": 0}, "id": 9},
        {"execute": "x-query-virtio", "arguments": {"foo": 1}, "id": 10},
        {"execute": "x-query-virtio-queue-status",
         "arguments": {"path": VIRTIO_ID, "queue": 1.5}, "id": 11},
        {"execute": "query-version", "id": "v"},
        {"execute": "x-query-virtio-status", "arguments": {"path": "/nope"}, "id": {"a": [1]}},
        {"execute": "x-query-virtio-queue-element", "arguments": {"path": "/nope", "queue": 0}},
        {"foo": 1},
        [1],
    ]
    lines, err = run_qmp(basic_args, reqs)
    got = _replies(lines)
    assert got[0] == ('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
                      '"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}')
    assert got[1:] == [
        '{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities '
        'negotiation with \'qmp_capabilities\'"}}',
        '{"return": {}, "id": 2}',
        '{"id": 3, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is '
        'already complete, command ignored"}}',
        '{"id": 4, "error": {"class": "CommandNotFound", "desc": "The command query-status has '
        'not been found"}}',
        '{"id": 5, "error": {"class": "GenericError", "desc": "Parameter \'queue\' is missing"}}',
        '{"id": 6, "error": {"class": "GenericError", "desc": "Parameter \'queue\' expects '
        'uint64"}}',
        '{"id": 7, "error": {"class": "GenericError", "desc": "Parameter \'queue\' expects '
        'uint16_t"}}',
        '{"id": 8, "error": {"class": "GenericError", "desc": "Parameter \'queue\' expects '
        'uint16_t"}}',
        '{"id": 9, "error": {"class": "GenericError", "desc": "Invalid parameter type for '
        '\'path\', expected: string"}}',
        '{"id": 10, "error": {"class": "GenericError", "desc": "Parameter \'foo\' is '
        'unexpected"}}',
        '{"id": 11, "error": {"class": "GenericError", "desc": "Parameter \'queue\' expects '
        'uint64"}}',
        '{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": '
        '"Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": "v"}',
        '{"id": {"a": [1]}, "error": {"class": "GenericError", "desc": "Path /nope is not a '
        'VirtIODevice"}}',
        '{"error": {"class": "GenericError", "desc": "Path /nope is not a VirtIO device"}}',
        '{"error": {"class": "GenericError", "desc": "QMP input member \'foo\' is unexpected"}}',
        '{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}',
    ]
    assert "Traceback" not in err


def test_parse_error_then_the_stream_goes_on(basic_args, tmp_path):
    stdin = b'{"execute": "qmp_capabilities"}\n{"execute": oops}\n{"execute": "query-version"}\n'
    r = subprocess.run([sys.executable, "-m", "vdecode", "qmp", *basic_args], input=stdin,
                       capture_output=True, timeout=120)
    lines = [x for x in r.stdout.decode().split("\r\n") if x]
    assert lines[1] == '{"return": {}}'
    assert lines[2].startswith('{"error": {"class": "GenericError", "desc": "JSON parse error')
    assert lines[3].startswith('{"return": {"qemu"')


def test_element_query_side_effect_shows_in_later_status(basic_args):
    path = "/machine/peripheral-anon/device[3]/virtio-backend"   # virtio-serial, queue 2
    reqs = [{"execute": "qmp_capabilities"},
            {"execute": "x-query-virtio-queue-status", "arguments": {"path": path, "queue": 2}},
            {"execute": "x-query-virtio-queue-element", "arguments": {"path": path, "queue": 2}},
            {"execute": "x-query-virtio-queue-status", "arguments": {"path": path, "queue": 2}}]
    lines, _ = run_qmp(basic_args, reqs)
    before, element, after = (json.loads(x)["return"] for x in _replies(lines)[2:5])
    assert before["shadow-avail-idx"] == 32
    assert after["shadow-avail-idx"] == element["avail"]["idx"] == 34


def test_qemu_qmp_client_over_socket(basic_args, tmp_path):
    qmp = pytest.importorskip("qemu.qmp")
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vdecode", "qmp", *basic_args,
                             "--socket", str(sock), "--connections", "1"],
                            stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            if sock.exists():
                break
            time.sleep(0.05)

        async def session():
            client = qmp.QMPClient("vdecode-test")
            await client.connect(str(sock))
            listing = await client.execute("x-query-virtio")
            status = await client.execute("x-query-virtio-queue-status",
                                          {"path": VIRTIO_ID, "queue": 0})
            with pytest.raises(qmp.ExecuteError) as err:
                await client.execute("x-query-virtio-status", {"path": "/machine"})
            await client.disconnect()
            return listing, status, err.value

        listing, status, err = asyncio.run(asyncio.wait_for(session(), 60))
        assert [d["name"] for d in listing][-1] == "virtio-blk"
        assert status["used-idx"] == 37 and status["vring-num"] == 256
        assert err.error.error.desc == "Path /machine is not a VirtIODevice"
        proc.wait(timeout=30)
        assert proc.returncode == 0
    finally:
        proc.kill()
