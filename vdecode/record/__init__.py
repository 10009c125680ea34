"""``vdecode record``: a flight recorder for a running QEMU.

It keeps a size-bounded rolling QMP transcript of the virtio state (the JSON-lines format
:mod:`vdecode.sources.qmp_log.jsonl` reads), asking only the questions that change nothing on the
QEMU release it talks to (``formats/qemu-*/record.json``), so the next crash has a log.

* :mod:`~vdecode.record.monitor`: the live monitor, over a unix or TCP socket or through
  ``virsh qemu-monitor-command`` for a libvirt domain;
* :mod:`~vdecode.record.questions`: which questions may be asked of which device, and why not;
* :mod:`~vdecode.record.rolling`: the log files, rotated between snapshots;
* :mod:`~vdecode.record.run`: the loop.

Not a stage of the reading pipeline: it writes what ``sources/`` later reads.
"""
