#!/usr/bin/env python3
"""Record a real QEMU case: a QMP transcript, the replies at a frozen instant, and dumps of that instant.

usage: capture.py SCENARIO.json OUTDIR
The scenario names QEMU device arguments and guest shell workloads. Output:
  early.jsonl   the whole QMP transcript up to the early snapshot (a log taken before the final workload)
  qmp.jsonl     the whole QMP transcript of the run
  truth.json    {"exchanges": [[request, reply], ...]} asked while the VM was stopped, in order
  dump.elf      dump-guest-memory ELF (paging=false) of the stopped VM; dump.kdump-*: the same in kdump formats
  qemu.core     gcore of the QEMU process at that instant (when scenario asks)
  console.log   guest serial console
"""
import json, os, socket, subprocess, sys, tempfile, time, shutil
from pathlib import Path

RUN = ""  # the run directory, for @RUN@ in qmp steps
WORK = os.environ.get("VD_WORK", ".")  # set by make_captures.sh: holds vmlinuz-<kernel> and initramfs-<kernel>.cpio.gz
QEMU = os.environ.get("VD_QEMU", "qemu-system-x86_64")  # another release: the wrapper get_qemu.sh prints


class QMP:
    def __init__(self, path, transcript):
        self.s = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile("rwb", buffering=0)
        self.t = transcript
        self.n = 0
        self.events = []
        self._recv()  # greeting
        self.cmd("qmp_capabilities")

    def _log(self, d, msg):
        self.t.append({"t": round(time.time(), 6), "dir": d, "msg": msg})

    def _recv(self):
        line = self.f.readline()
        if not line:
            raise RuntimeError("QMP closed")
        msg = json.loads(line)
        self._log("<-", msg)
        return msg

    def raw(self, execute, **args):
        self.n += 1
        req = {"execute": execute, "id": self.n}
        if args:
            req["arguments"] = args
        self._log("->", req)
        self.f.write((json.dumps(req) + "\n").encode())
        while True:
            msg = self._recv()
            if "event" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") == self.n:
                return req, msg

    def cmd(self, execute, **args):
        _, msg = self.raw(execute, **args)
        if "error" in msg:
            raise RuntimeError(f"{execute}: {msg['error']}")
        return msg["return"]


class Guest:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.s.settimeout(120)
        self.k = 0

    def sh(self, command, timeout=120):
        self.k += 1
        mark = f"__DONE_{self.k}__"
        self.s.sendall(f"{command}\necho {mark}\n".encode())
        buf = b""
        end = time.time() + timeout
        while mark.encode() + b"\r\n" not in buf and mark.encode() + b"\n" not in buf:
            if time.time() > end:
                raise TimeoutError(command)
            buf += self.s.recv(65536)
        return buf.decode(errors="replace")


SKIP = set()  # commands this QEMU must not be asked (scenario "skip_commands": QEMU 11.1 aborts on one)


def ask_everything(q: QMP, exchanges, elements: bool, element_plan=None, skip_vhost_queues=False):
    """The full question set; appends (request, reply) pairs. Returns the device/queue map.

    skip_vhost_queues: no x-query-virtio-queue-status on a device whose vhost is started (QEMU 7.2
    asks a vhost-user backend GET_VRING_BASE for it, which stops that ring: the guest's I/O hangs).
    """
    def ask(execute, **args):
        if execute in SKIP:
            return {"skipped": True}
        req, rep = q.raw(execute, **args)
        req = {k: v for k, v in req.items() if k != "id"}
        exchanges.append([req, {k: v for k, v in rep.items() if k != "id"}])
        return rep
    devs = ask("x-query-virtio").get("return", [])   # QEMU 8.2+: an error when there is none
    qs = {}
    for d in devs:
        st = ask("x-query-virtio-status", path=d["path"]).get("return")
        qs[d["path"]] = []
        vhost_on = skip_vhost_queues and (st or {}).get("vhost-started")
        if skip_vhost_queues and st is None:
            # no status (QEMU 11.1 aborts on it): a vhost queue question says whether vhost runs; it
            # only reads QEMU's vhost_dev, unlike a queue question (GET_VRING_BASE)
            vhost_on = "return" in ask("x-query-virtio-vhost-queue-status", path=d["path"], queue=0)
        for i in range(0 if vhost_on else st["num-vqs"] + 1 if st else 1024):
            rep = ask("x-query-virtio-queue-status", path=d["path"], queue=i)
            if "return" in rep:
                qs[d["path"]].append((i, rep["return"]))
            elif not st:  # no status to count the queues: the first invalid number ends them
                break
        rep = ask("x-query-virtio-vhost-queue-status", path=d["path"], queue=0)
        if "return" in rep:  # a vhost device: every queue's vhost status, and one past the end
            known = len(qs[d["path"]])   # none known (no status, queues skipped): until the first error
            for i in range(1, known + 1 if known else 1025):
                if "return" not in ask("x-query-virtio-vhost-queue-status", path=d["path"], queue=i) \
                        and not known:
                    break
    # error paths QEMU answers
    ask("x-query-virtio-status", path="/machine/peripheral-anon/device[99]/virtio-backend")
    ask("x-query-virtio-status", path="/machine")
    if devs:
        p0 = devs[0]["path"]
        ask("x-query-virtio-queue-status", path=p0, queue=1023)
        ask("x-query-virtio-queue-element", path=p0, queue=1023)
        # QMP-level and argument errors, as QEMU words them
        bad = "/machine/peripheral-anon/device[99]/virtio-backend"
        ask("x-query-virtio-queue-status", path=bad, queue=0)
        ask("x-query-virtio-queue-element", path=bad, queue=0)
        ask("x-query-virtio-vhost-queue-status", path=bad, queue=0)
        ask("x-query-virtio-queue-status", path=p0)
        ask("x-query-virtio-queue-status", path=p0, queue="0")
        ask("x-query-virtio-queue-status", path=p0, queue=70000)
        ask("x-query-virtio-queue-status", path=p0, queue=-1)
        ask("x-query-virtio-status", path=p0, extra=1)
        ask("x-query-virtio-status", path=5)
        ask("x-query-virtio-status")
        ask("x-query-virtio-queue-element", path=p0, queue=0, index=65536)
        ask("x-query-virtio", foo=1)
        ask("x-query-virtio-nonexistent")
    if elements:
        ask_elements(ask, qs)
    return devs, qs


def ask_elements(ask, qs):
    for path, queues in qs.items():
        for i, st in queues:
            num = st["vring-num"]
            ask("x-query-virtio-queue-element", path=path, queue=i)
            idxs = {0, 1, num - 1, st["used-idx"] % 65536, (st["used-idx"] - 1) % 65536,
                    st.get("last-avail-idx", 0), st.get("last-avail-idx", 0) + 1, 65535}
            for ix in sorted(idxs):
                ask("x-query-virtio-queue-element", path=path, queue=i, index=ix % 65536)


def main():
    scen = json.loads(Path(sys.argv[1]).read_text())
    SKIP.update(scen.get("skip_commands", []))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    global RUN
    run = Path(tempfile.gettempdir()) / f"vdcap-{os.getpid()}"
    run.mkdir()
    RUN = str(run)
    transcript = []
    accel = scen.get("accel", os.environ.get("VD_ACCEL", "tcg"))
    mem = scen.get("mem", "160M")
    kern = scen.get("kernel", "gen")
    KERNEL, INITRD = f"{WORK}/vmlinuz-{kern}", f"{WORK}/initramfs-{kern}.cpio.gz"
    argv = [QEMU, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
            "-machine", scen.get("machine", "q35"), "-accel", accel + (",tb-size=32" if accel == "tcg" else ""), "-m", mem,
            "-smp", str(scen.get("smp", 1)), "-cpu", scen.get("cpu", "host,-arch-capabilities" if accel == "kvm" else "max"), "-nodefaults", "-display", "none", "-no-user-config",
            "-kernel", KERNEL, "-initrd", INITRD,
            "-append", "console=ttyS0 panic=0 init_on_free=1 " + scen.get("append", ""),
            "-serial", f"file:{out}/console.log",
            "-chardev", f"socket,id=ctl,path={run}/ctl.sock,server=on,wait=off"]
    if scen.get("control") == "virtconsole":  # machines with one serial port (microvm): the shell on hvc0
        argv += ["-device", "virtio-serial-device,id=ctlser", "-device", "virtconsole,chardev=ctl,id=ctlcon"]
        argv[argv.index("-append") + 1] += " vdctl=hvc0"
    else:
        argv += ["-serial", "chardev:ctl"]
    argv += [
            "-qmp", f"unix:{run}/qmp.sock,server=on,wait=off"]
    for f in scen.get("files", []):  # name, size
        subprocess.run(["truncate", "-s", f[1], str(run / f[0])], check=True)
    for d in scen.get("dirs", []):
        (run / d).mkdir(parents=True, exist_ok=True)
        (run / d / "hello.txt").write_text("hello from the host\n" * 100)
    daemons = []
    for i, a in enumerate(scen.get("daemons", [])):  # e.g. qemu-storage-daemon, started before QEMU
        daemons.append(subprocess.Popen([x.replace("@RUN@", str(run)) for x in a], cwd=run,
                                        stdout=open(out / f"daemon{i}.out", "w"), stderr=subprocess.STDOUT))
    for s in scen.get("wait_sockets", []):
        for _ in range(200):
            if (run / s).exists():
                break
            time.sleep(0.05)
    for a in scen["devices"]:
        argv += [x.replace("@RUN@", str(run)) for x in a]
    print(" ".join(argv), file=sys.stderr)
    (out / "qemu-argv.json").write_text(json.dumps(argv, indent=1))
    def allow_core():  # a crashed QEMU leaves a kernel-written core in its working directory
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    proc = subprocess.Popen(argv, stdout=open(out / "qemu.out", "w"), stderr=subprocess.STDOUT,
                            cwd=run, preexec_fn=allow_core)
    try:
        time.sleep(0.5)
        q = QMP(str(run / "qmp.sock"), transcript)
        end = time.time() + 180
        while b"VDECODE-GUEST-READY" not in (out / "console.log").read_bytes():
            if time.time() > end or proc.poll() is not None:
                raise RuntimeError("guest did not come up")
            time.sleep(0.3)
        g = Guest(str(run / "ctl.sock"))
        g.sh("stty -echo")
        g.console = out / "console.log"
        for step in scen.get("warmup", []):
            run_step(q, g, step)
        ask_everything(q, [], elements=False,  # element queries can break a device (virtio_error)
                       skip_vhost_queues=scen.get("early_skip_vhost_queues", False))
        (out / "early.jsonl").write_text("".join(json.dumps(x) + "\n" for x in transcript))
        for step in scen.get("workload", []):
            run_step(q, g, step)
        if scen.get("running_instant"):
            # a core of a running VM (a started vhost device is only seen so): the question set while
            # it runs (no queue question of a started vhost device: GET_VRING_BASE stops its ring),
            # gcore, the same questions again; a guest left idle by the workload answers the same
            truth, again = [], []
            ask_everything(q, truth, elements=False, skip_vhost_queues=True)
            subprocess.run(["gdb", "-p", str(proc.pid), "-batch", "-ex", f"gcore {out}/qemu.core"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            (out / "core-kind").write_text("gcore\n")
            ask_everything(q, again, elements=False, skip_vhost_queues=True)
            if again != truth:
                changed = [a[0] for a, b in zip(truth, again) if a != b]
                raise RuntimeError(f"replies changed across the core (guest not idle): {changed[:3]}")
            (out / "truth.json").write_text(json.dumps({"scenario": scen.get("name"), "qemu": q.cmd("query-version"),
                                                        "exchanges": truth}, indent=1))
            q.raw("quit")
            return
        q.cmd("stop")
        truth = []
        devs, qs = ask_everything(q, truth, elements=False)
        caps = q.cmd("query-dump-guest-memory-capability")["formats"]
        for fmt in scen.get("dump_formats", ["elf"]):
            if fmt not in caps:
                print("skip dump format", fmt, file=sys.stderr)
                continue
            name = "dump.elf" if fmt == "elf" else f"dump.{fmt}"
            q.cmd("dump-guest-memory", paging=False, protocol=f"file:{out}/{name}", format=fmt)
        if scen.get("gcore"):
            subprocess.run(["gdb", "-p", str(proc.pid), "-batch", "-ex", f"gcore {out}/qemu.core"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            (out / "core-kind").write_text("gcore\n")
        if scen.get("abort"):  # QEMU dies here (SIGABRT): its core is the kernel's, taken at this instant
            version = q.cmd("query-version")
            os.kill(proc.pid, 6)
            proc.wait(timeout=120)
            cores = sorted(run.glob("core*"))
            if not cores:
                raise RuntimeError("QEMU aborted but left no core (core_pattern?)")
            shutil.move(str(cores[0]), out / "qemu.core")
            (out / "core-kind").write_text("kernel\n")  # package.py: case.json "core"
            (out / "truth.json").write_text(json.dumps({"scenario": scen.get("name"), "qemu": version,
                                                        "exchanges": truth}, indent=1))
            return
        def ask(execute, **args):
            req, rep = q.raw(execute, **args)
            truth.append([{k: v for k, v in req.items() if k != "id"}, {k: v for k, v in rep.items() if k != "id"}])
            return rep
        ask_elements(ask, qs)
        # the side effect of element queries on shadow-avail-idx, as QEMU shows it afterwards
        for path, queues in qs.items():
            for i, _ in queues:
                ask("x-query-virtio-queue-status", path=path, queue=i)
            if "x-query-virtio-status" not in SKIP:
                ask("x-query-virtio-status", path=path)
        (out / "truth.json").write_text(json.dumps({"scenario": scen.get("name"), "qemu": q.cmd("query-version"),
                                                    "exchanges": truth}, indent=1))
        q.raw("quit")
    finally:
        (out / "qmp.jsonl").write_text("".join(json.dumps(x) + "\n" for x in transcript))
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        for d in daemons:
            d.terminate()
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
        shutil.rmtree(run, ignore_errors=True)


def run_step(q, g, step):
    print("step", step, file=sys.stderr)
    kind, arg = step[0], step[1]
    if kind == "sh":
        print(g.sh(arg, timeout=step[2] if len(step) > 2 else 120)[-300:], file=sys.stderr)
    elif kind == "qmp":  # @RUN@ in the arguments is the run directory
        args = json.loads(json.dumps(step[2] if len(step) > 2 else {}).replace("@RUN@", RUN))
        q.cmd(arg, **args)
    elif kind == "sleep":
        time.sleep(arg)
    elif kind == "bg":  # a background loop in the guest
        g.sh(f"( {arg} ) >/dev/null 2>&1 &")
    elif kind == "reboot":  # the guest reboots (arg: the command); wait for the init's ready line again
        n = g.console.read_bytes().count(b"VDECODE-GUEST-READY")
        g.s.sendall((arg + "\n").encode())
        end = time.time() + 240
        while g.console.read_bytes().count(b"VDECODE-GUEST-READY") <= n:
            if time.time() > end:
                raise RuntimeError("guest did not come back")
            time.sleep(0.3)
        time.sleep(1)
        g.sh("stty -echo")
    elif kind == "crash":  # the guest panics; QEMU pauses it (-action panic=pause)
        g.s.sendall((arg + "\n").encode())
        end = time.time() + 60
        while not any(e.get("event") == "GUEST_PANICKED" for e in q.events):
            if time.time() > end:
                raise RuntimeError("no GUEST_PANICKED")
            q.raw("query-status")
            time.sleep(0.5)


if __name__ == "__main__":
    main()
