"""During ``fedx run`` every process of the run (this one, Ray's GCS server, raylet, dashboard agent and
workers) listens on 127.0.0.1 only. The listening TCP sockets of the process tree are read from /proc
(``/proc/net/tcp*`` for the listening sockets, ``/proc/PID/fd`` for who holds them) while a small
simulation runs.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from pathlib import Path

import pytest

import fedx
from fedx.config import config_from_dict
from fedx.flower.deploy import descendant_pids

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")]


def _listening_inodes() -> dict[int, str]:
    """``{socket inode: "address:port"}`` of every listening TCP socket on the machine."""
    found: dict[int, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != "0A":          # TCP_LISTEN
                continue
            hexaddr, hexport = local.split(":")
            raw = bytes.fromhex(hexaddr)
            if width == 8:
                ip = ipaddress.ip_address(raw[::-1])
            else:   # four little-endian 32-bit words
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                ip = ip.ipv4_mapped or ip
            addr = str(ip)
            found[inode] = f"{addr}:{int(hexport, 16)}"
    return found


def listening_sockets(root: int) -> dict[str, set[str]]:
    """``{"address:port": {process names}}`` of the listening TCP sockets held by ``root`` and its descendants."""
    inodes = _listening_inodes()
    held: dict[str, set[str]] = {}
    for pid in {root} | descendant_pids(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    held.setdefault(inodes[inode], set()).add(f"{name}[{pid}]")
    return held


def test_a_simulation_listens_on_loopback_only(small_csv: Path, small_config, tmp_path: Path) -> None:
    import pandas as pd

    two = tmp_path / "two.csv"
    pd.read_csv(small_csv).query("site != 'east'").to_csv(two, index=False)
    cfg = config_from_dict(small_config(two, federation={"rounds": 1, "min_clients": 2},
                                        report={"baselines": []}))
    seen: dict[str, set[str]] = {}
    done = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = fedx.run(cfg, tmp_path / "out", progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    while not done.is_set():
        for addr, names in listening_sockets(os.getpid()).items():
            seen.setdefault(addr, set()).update(names)
        time.sleep(0.3)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    ray_names = {n.split("[")[0] for names in seen.values() for n in names}
    assert any("gcs_server" in n or "raylet" in n for n in ray_names), f"Ray's processes not seen: {seen}"
    outside = {addr: sorted(names) for addr, names in seen.items()
               if not ipaddress.ip_address(addr.rpartition(":")[0]).is_loopback}
    assert not outside, f"listening beyond loopback: {outside}"
