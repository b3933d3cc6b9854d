"""Network namespaces joined by a bridge: hosts for the multi-host test, on this machine.

``Hosts({"edge": "10.77.0.1", ...})`` creates one namespace per host and one for the
bridge (so nothing is added to the machine's own namespace), a veth pair from each host
(``eth0`` inside, its peer on the bridge), addresses in one /24, every link up.
``run(host, argv)``/``popen`` run a command inside a host (``ip netns exec``);
``cut(host)``/``heal(host)`` take the host's ``eth0`` down and up. ``remove()`` deletes
every namespace it made (their links go with them); use it in a ``finally``.
"""
from __future__ import annotations

import os
import subprocess

PREFIX = 24


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Hosts:
    def __init__(self, addrs: dict[str, str]):
        self.tag = f"zc{os.getpid() % 100000}"
        self.addrs = addrs
        self.names = {host: f"{self.tag}-{host}" for host in addrs}
        self.bridge_ns = f"{self.tag}-br"
        self.made: list[str] = []

    def create(self) -> "Hosts":
        try:
            for ns in [self.bridge_ns, *self.names.values()]:
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for i, (host, addr) in enumerate(self.addrs.items()):
                self._wire(self.names[host], f"p{i}", addr)
        except BaseException:
            self.remove()
            raise
        return self

    def _wire(self, ns: str, peer: str, addr: str) -> None:
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0")
        ip("-n", self.bridge_ns, "link", "set", peer, "up")
        ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[host], *argv]

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(host, argv), **kwargs)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(host, argv), **kwargs)

    def cut(self, host: str) -> None:
        ip("-n", self.names[host], "link", "set", "eth0", "down")

    def heal(self, host: str) -> None:
        ip("-n", self.names[host], "link", "set", "eth0", "up")

    def remove(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []
