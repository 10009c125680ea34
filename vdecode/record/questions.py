"""Which questions the recorder may ask a live QEMU: ``formats/qemu-<release>/record.json``.

The table, not this code, says what is unsafe on which release and why: ``never`` lists commands
never asked, ``skip`` rules spare a command on some devices (``device``: ``"any"`` or
``"vhost"``, a device whose vhost back-end is started or whose name says vhost) while the VM is
in some state (``vm``: ``"any"`` or ``"running"``). A release without its own table gets the
nearest one (:func:`vdecode.profiles.load_profile`), and the recorder says so.
"""

from __future__ import annotations

from vdecode.frozen import record
from vdecode.profiles import Profile, available_versions, load_profile


@record
class Rule:
    command: str
    device: str
    vm: str
    why: str


@record
class Questions:
    """The recorder's questions for one QEMU release."""

    release: str                    # the profile the table comes from (``"7.2"``)
    ask: tuple[str, ...]
    never: tuple[Rule, ...]
    skip: tuple[Rule, ...]
    warning: str | None = None      # set when the release has no table of its own

    def allowed(self, command: str) -> bool:
        """Whether ``command`` may ever be asked (it is in ``ask`` and not in ``never``)."""
        return command in self.ask and not any(r.command == command for r in self.never)

    def spared(self, command: str, *, vhost: bool, running: bool) -> Rule | None:
        """The rule that spares ``command`` on such a device now, else ``None``."""
        if not self.allowed(command):
            return next((r for r in self.never if r.command == command),
                        Rule(command, "any", "any", "not in this release's questions"))
        for r in self.skip:
            if r.command != command:
                continue
            if r.device == "vhost" and not vhost:
                continue
            if r.vm == "running" and not running:
                continue
            return r
        return None


def questions_for(version: tuple[int, ...] | None) -> Questions:
    """The table for QEMU ``version`` (``(7, 2, 22)``); the newest table when it is unknown."""
    # no version: the newest table, which spares the most (11.1's spares x-query-virtio-status)
    profile: Profile = load_profile(".".join(map(str, version)) if version
                                    else available_versions()[-1])
    t = profile.table("record")
    rules = {k: tuple(Rule(r["command"], r.get("device", "any"), r.get("vm", "any"), r["why"])
                      for r in t.get(k, ())) for k in ("never", "skip")}
    warning = profile.warning if version else (
        f"QEMU did not say its version: asking what QEMU {profile.release} may be asked")
    return Questions(profile.version, tuple(t["ask"]), rules["never"], rules["skip"], warning)
