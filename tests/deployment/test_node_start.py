"""`fedx node` at start-up and at the end of its run, without a SuperLink (fedx/flower/operate.py, deploy.py).

The SuperNode logs below are what flower-supernode 1.42 wrote on this machine (colour codes removed) for
each failure; Flower ends all of them with the same ``Exit Code: 305``. The supervisor's decisions are
tested with a stand-in process and a stand-in clock; one real process checks the plain-text log files.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from fedx.config import load_node_config
from fedx.errors import DeploymentError
from fedx.flower import deploy, operate

_EXIT_305 = ("ERROR :     Exit Code: 305\nFailed to initialize the connection to the SuperLink.\n{cause}\n"
             "The SuperNode could not establish a connection to the SuperLink.\n\n"
             "For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/305.html>\n")
_START = ("INFO :      Starting Flower SuperNode\nINFO:     Started server process [7581]\n"
          "INFO:     Uvicorn running on http://127.0.0.1:36191 (Press CTRL+C to quit)\n")
NOT_REGISTERED = _START + _EXIT_305.format(cause="[code: 2004] Failed to activate SuperNode.")
WRONG_CA = _START + "ERROR :     SSL/TLS handshake error detected.\n" + _EXIT_305.format(
    cause="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
          "(_ssl.c:1006)")
PLAIN_SERVER = _START + "ERROR :     SSL/TLS handshake error detected.\n" + _EXIT_305.format(
    cause="[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
RETRYING = _START + "".join(f"WARNING :   Connection attempt failed, retrying in {d} seconds\n"
                            for d in ("0.45", "1.00", "6.24"))
JOINED = _START + "INFO :      SuperNode ID: 16108255671297908573\nINFO :      Starting Flower SuperExec\n"
IN_RUN = JOINED + ("INFO :      [RUN 42, ROUND 1]\nINFO :      Received: train message 1a2b\nINFO :      Received "
                   "successfully\nINFO :      [RUN 42, ROUND 1]\nINFO :      Sending: train message\n"
                   "INFO :      Sent successfully\n")


@pytest.mark.parametrize(("text", "kind", "detail"), [
    (NOT_REGISTERED, "key-not-registered", "Failed to activate SuperNode"),
    (WRONG_CA, "certificate-untrusted", "CERTIFICATE_VERIFY_FAILED"),
    (PLAIN_SERVER, "server-not-tls", "WRONG_VERSION_NUMBER"),
    (RETRYING + "WARNING :   Giving up reconnection after 600.12 seconds and 31 tries.\n", "server-unreachable",
     "600.12 seconds"),
])
def test_each_supernode_failure_is_told_apart(text: str, kind: str, detail: str) -> None:
    trouble = deploy.diagnose_supernode(text)
    assert trouble is not None and trouble.kind == kind and detail in trouble.detail
    assert trouble.retryable == (kind == "key-not-registered")


def test_a_running_or_joined_node_has_no_trouble() -> None:
    assert deploy.diagnose_supernode(RETRYING) is None
    assert deploy.diagnose_supernode(JOINED) is None


def test_the_retry_delays_grow_to_a_cap() -> None:
    delays = operate.retry_delays(first=2.0, factor=2.0, cap=60.0)
    assert [next(delays) for _ in range(8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


# -- the supervisor, with a stand-in SuperNode ----------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeSupernode:
    """A SuperNode whose log grows by one scripted chunk per poll, then exits with ``code`` (or runs on)."""

    def __init__(self, chunks: list[str], code: int | None, tmp: Path) -> None:
        self.chunks, self.code, self.text, self.node_id = list(chunks), code, "", None
        self.pid, self.log_path = 4242, tmp / "supernode.log"

    def poll(self) -> int | None:
        if self.chunks:
            self.text += self.chunks.pop(0)
            return None
        return self.code

    def log_text(self) -> str:
        return self.text


def node_file(folder: Path, *, insecure: bool = False) -> Path:
    (folder / "data.csv").write_text("x,label\n1,0\n2,1\n")
    (folder / "ca.crt").write_text("-")
    (folder / "site.key").write_text("-")
    doc = {"name": "site", "data": "data.csv", "out_dir": "out",
           "superlink": {"address": "127.0.0.1:9", "root_certificates": "ca.crt", "auth_key": "site.key",
                         "insecure": insecure}}
    (folder / "node.yaml").write_text(yaml.safe_dump(doc))
    return folder / "node.yaml"


def supervise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: list[FakeSupernode], *,
              insecure: bool = False, **kwargs) -> tuple[operate.NodeSupervisor, list[str], list[dict]]:
    path = node_file(tmp_path, insecure=insecure)
    node = load_node_config(path)
    said: list[str] = []
    started: list[dict] = []

    def start(**opts):
        started.append(opts)
        return scripts.pop(0)

    monkeypatch.setattr(deploy, "start_supernode", start)
    monkeypatch.setattr(deploy, "stop", lambda proc, timeout=10.0: proc.code)
    clock = Clock()
    sup = operate.NodeSupervisor(node, path, node.out_path, say=said.append, clock=clock, sleep=clock.sleep,
                                 **kwargs)
    return sup, said, started


def test_a_node_waits_with_backoff_until_the_server_registers_its_key(tmp_path, monkeypatch) -> None:
    scripts = [FakeSupernode([NOT_REGISTERED], 1, tmp_path) for _ in range(3)]
    joined = FakeSupernode([JOINED, ""], None, tmp_path)
    scripts.append(joined)
    sup, said, started = supervise(tmp_path, monkeypatch, scripts, retry_for=600.0)
    real_poll = joined.poll

    def poll() -> int | None:                       # the operator presses Ctrl-C once the node has joined
        if not joined.chunks:
            raise KeyboardInterrupt
        return real_poll()

    joined.poll = poll  # type: ignore[method-assign]
    assert sup.run() == 130
    waits = [line for line in said if "does not know this node's key yet" in line]
    assert len(waits) == 3 and "site.pub" in waits[0] and "retrying in 2 s" in waits[0]
    assert "retrying in 4 s" in waits[1] and "retrying in 8 s" in waits[2] and "--retry-for" in waits[0]
    assert any("connected to the server as node 16108255671297908573" in line for line in said)
    assert all(opts["max_wait_time"] == 600.0 for opts in started)


def test_a_node_whose_key_is_never_registered_gives_up_after_retry_for(tmp_path, monkeypatch) -> None:
    scripts = [FakeSupernode([NOT_REGISTERED], 1, tmp_path) for _ in range(20)]
    sup, said, _ = supervise(tmp_path, monkeypatch, scripts, retry_for=100.0)
    with pytest.raises(DeploymentError, match=r"the server refused this node's key for 100 s \(--retry-for\): "
                                              r"the server operator must register its public key .*site\.pub"):
        sup.run()
    assert 3 <= len([line for line in said if "does not know this node's key yet" in line]) <= 6


def test_a_node_that_had_joined_gets_a_fresh_window_when_its_supernode_stops(tmp_path, monkeypatch) -> None:
    first = FakeSupernode([JOINED, ""], 1, tmp_path)          # joined, then stopped 700 s into the run
    second = FakeSupernode([""], None, tmp_path)
    sup, said, started = supervise(tmp_path, monkeypatch, [first, second], retry_for=600.0)
    real_first, real_second = first.poll, second.poll

    def later() -> int | None:
        sup.clock.now += 700.0                                 # type: ignore[attr-defined]
        return real_first()

    def interrupted() -> int | None:
        real_second()
        raise KeyboardInterrupt

    first.poll, second.poll = later, interrupted  # type: ignore[method-assign]
    assert sup.run() == 130
    assert len(started) == 2
    assert any("SuperNode exited with status 1; starting it again in 2 s" in line for line in said)


def test_once_gives_up_on_an_unregistered_key_at_once(tmp_path, monkeypatch) -> None:
    sup, _, _ = supervise(tmp_path, monkeypatch, [FakeSupernode([NOT_REGISTERED], 1, tmp_path)], once=True)
    with pytest.raises(DeploymentError, match=r"the server refused this node's key: the server operator"):
        sup.run()


@pytest.mark.parametrize(("text", "expected"), [
    (WRONG_CA, (r"does not verify against .*ca\.crt \(\[SSL: CERTIFICATE_VERIFY_FAILED\].*check "
                r"superlink\.root_certificates in .*node\.yaml \(passed as --root-certificates .*ca\.crt\)")),
    (PLAIN_SERVER, r"does not speak TLS .*WRONG_VERSION_NUMBER.*started with --insecure"),
])
def test_a_tls_failure_names_the_file_to_check_and_ends_the_node(tmp_path, monkeypatch, text, expected) -> None:
    sup, _, started = supervise(tmp_path, monkeypatch, [FakeSupernode([text], 1, tmp_path)])
    with pytest.raises(DeploymentError, match=expected) as info:
        sup.run()
    assert "refused this node's key" not in str(info.value)
    assert len(started) == 1


def test_a_node_without_tls_facing_a_tls_server_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(deploy, "probe_tls", lambda address, timeout=3.0: True)
    sup, _, _ = supervise(tmp_path, monkeypatch, [FakeSupernode([RETRYING] + [""] * 50, None, tmp_path)],
                          insecure=True)
    with pytest.raises(DeploymentError, match=r"speaks TLS, but this node runs without it \(--insecure.*"
                                              r"set superlink\.root_certificates"):
        sup.run()


def test_a_node_waits_for_an_absent_server_for_retry_for_and_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(deploy, "probe_tls", lambda address, timeout=3.0: None)
    sup, said, _ = supervise(tmp_path, monkeypatch, [FakeSupernode([RETRYING] + [""] * 1000, None, tmp_path)],
                             retry_for=120.0)
    with pytest.raises(DeploymentError, match=r"did not answer for 120 s \(--retry-for\)"):
        sup.run()
    assert any("waiting for the server at 127.0.0.1:9: nothing answers there yet" in line for line in said)


def test_a_node_stops_when_its_run_has_ended(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    operate.record_run_end(out, 7)                  # a previous run's record: stale
    proc = FakeSupernode([JOINED, IN_RUN[len(JOINED):], "", ""] + [""] * 200, None, tmp_path)
    sup, said, _ = supervise(tmp_path, monkeypatch, [proc])
    real_poll = proc.poll

    def poll() -> int | None:
        if len(proc.chunks) == 200:                 # the ClientApp answers run 42's final message
            time.sleep(0.01)
            operate.record_run_end(out, 42)
            proc.text += "INFO :      Sending: evaluate message\nINFO :      Sent successfully\n"
        if len(proc.chunks) == 150:                 # the server has taken the reply and closes
            proc.text += "WARNING :   Connection attempt failed, retrying in 0.52 seconds\n"
        return real_poll()

    proc.poll = poll  # type: ignore[method-assign]
    assert sup.run() == 0
    assert 140 < len(proc.chunks) < 150              # it left only once the server had closed
    assert any("taking part in run 42" in line for line in said)
    assert said[-1] == ("site: run 42 has ended; this node stops (start it with --keep-running to take part in "
                        "further runs)")


def test_keep_running_stays_after_the_run(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    proc = FakeSupernode([JOINED, IN_RUN[len(JOINED):]] + [""] * 30, 0, tmp_path)
    sup, said, _ = supervise(tmp_path, monkeypatch, [proc], keep_running=True, once=True)
    operate.record_run_end(out, 42)
    assert sup.run() == 0                            # it stopped only because the SuperNode itself exited
    assert any("run 42 has ended; waiting for further runs (--keep-running)" in line for line in said)
    assert not proc.chunks


# -- the server's waiting line -----------------------------------------------------------------------------

def test_the_server_shows_who_is_connected_while_it_waits() -> None:
    waiting = operate.NodeWaitReporter(3, {1: "east", 2: "north", 3: "south"}, secure=True)
    nodes = [{"node-id": 1, "status": "online"}, {"node-id": 2, "status": "registered"},
             {"node-id": 3, "status": "registered"}]
    assert waiting.update(nodes) == "institutions connected: 1/3 (east); waiting for north, south; keys registered: 3"
    assert waiting.update(nodes) is None
    nodes[2]["status"] = "online"
    assert waiting.update(nodes) == ("institutions connected: 2/3 (east, south); waiting for north; "
                                     "keys registered: 3")


# -- real processes: plain log files, and the TLS probe ----------------------------------------------------

def test_log_files_hold_plain_text(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    code = "import sys; print('\\x1b[92mINFO \\x1b[0m:      Starting Flower SuperNode'); sys.stdout.flush()"
    from fedx.flower.deploy.environment import _spawn

    popen, offset = _spawn("supernode", [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"},
                                  log_path=log, cwd=tmp_path)
    assert popen.wait(timeout=30) == 0 and offset == 0
    deadline = time.monotonic() + 10
    while "Starting" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_bytes() == b"INFO :      Starting Flower SuperNode\n"


def _serve_once(sock: socket.socket, wrap) -> None:
    try:
        conn, _ = sock.accept()
        with wrap(conn) as c:
            c.recv(1)
    except (OSError, ssl.SSLError):
        pass


@pytest.mark.parametrize("tls", [True, False])
def test_the_probe_tells_a_tls_server_from_a_plain_one(tmp_path: Path, tls: bool) -> None:
    files = deploy.make_ca_and_server_cert(tmp_path / "certs")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.server_cert, files.server_key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        wrap = (lambda c: ctx.wrap_socket(c, server_side=True)) if tls else (lambda c: c)
        server = threading.Thread(target=_serve_once, args=(sock, wrap), daemon=True)
        server.start()
        assert deploy.probe_tls(f"127.0.0.1:{port}") is tls
        server.join(timeout=10)
    assert deploy.probe_tls(f"127.0.0.1:{port}") is None       # nothing listens there now
