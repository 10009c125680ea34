"""Fleet triage: many dumps at once, one record per VM (``vdecode triage PATH...``).

The work flows in three steps, each a module:

* :mod:`.discover` walks the paths and groups the files into :class:`~.discover.VmJob` values:
  a dump (guest dump, QEMU core) with its QMP logs by name, a bundle alone;
* :mod:`.record` runs one job in a worker: it opens the inputs and asks the same pipeline as
  ``vdecode DUMP`` (``session.build_machine``, ``findings.find_findings``,
  ``view_model.build_view``) for the record; an input that cannot be read becomes an error in the
  record, never a stopped run;
* :mod:`.run` maps the jobs over local processes (``concurrent.futures.ProcessPoolExecutor``) or
  a Dask cluster (``distributed.Client``), and :mod:`.output` writes the records (rich table,
  JSON lines, CSV).
"""

from vdecode.triage.discover import VmJob, discover
from vdecode.triage.record import triage_vm
from vdecode.triage.run import run_triage

__all__ = ("VmJob", "discover", "triage_vm", "run_triage")
