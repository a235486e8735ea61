"""The Pi's uplink state from sysfs: ``/sys/class/net/<iface>/operstate``.

The interface is the first of ``interfaces`` whose operstate is ``up``; its kind is
``wifi`` if it has a ``wireless`` directory, ``lte`` for ``wwan*``/``usb*`` modems, else
``ethernet``. Reading files only: no vendor library.
"""

from __future__ import annotations

from pathlib import Path

from hardware.base import LinkState, Network

SYSFS = Path("/sys/class/net")


class PiNetwork(Network):
    """Link state from sysfs."""

    def __init__(
        self, interfaces: tuple[str, ...] = ("wlan0", "wwan0", "usb0", "eth0"), sysfs: Path = SYSFS
    ) -> None:
        self.interfaces = interfaces
        self.sysfs = sysfs

    def _kind(self, iface: str) -> str:
        if (self.sysfs / iface / "wireless").is_dir():
            return "wifi"
        if iface.startswith(("wwan", "usb")):
            return "lte"
        return "ethernet"

    def state(self) -> LinkState:
        """Up if any of the interfaces is up."""
        for iface in self.interfaces:
            try:
                operstate = (self.sysfs / iface / "operstate").read_text().strip()
            except OSError:
                continue
            if operstate == "up":
                return LinkState(True, self._kind(iface))
        first = next((i for i in self.interfaces if (self.sysfs / i).exists()), "")
        return LinkState(False, self._kind(first) if first else "wifi")
