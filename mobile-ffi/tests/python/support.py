"""What the binding tests share: a real `nara-server` process and its admin CLI, waiting with a
deadline, the devices' store keys, a listener that records what it is told, and small builders.
The pytest fixtures that use them are in conftest.py."""

import datetime
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mobile_ffi import FfiOrderInput

SERVER = os.environ.get("NARA_SERVER", "target/debug/nara-server")
TODAY = datetime.date.today().isoformat()
DEADLINE_S = 60

USERS = {
    "anna": "carer",
    "bo": "carer",
    "nina": "nurse",
    "nils": "nurse",
}
# p1: notes and a double dose; p2: a conflict between the nurses; p3: withdrawn from anna.
ASSIGNMENTS = {
    "p1": ["anna", "bo", "nina", "nils"],
    "p2": ["anna", "bo", "nina", "nils"],
    "p3": ["anna", "nina"],
}


def wait_for(condition, what):
    """Polls `condition` until it is true; fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `nara-server serve` process on a fresh data directory, and its admin CLI."""

    def __init__(self, data: Path):
        self.data = data
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = data.parent / "server.log"
        self.proc = None
        self.fingerprint = None

    def admin(self, *args):
        done = subprocess.run(
            [SERVER, "admin", "--data", str(self.data), "--json", *args],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"admin {args}: {done.stderr}"
        return json.loads(done.stdout)

    def start(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [SERVER, "serve", "--data", str(self.data), "--listen", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def fingerprint():
            assert self.proc.poll() is None, f"the server exited:\n{self.log()}"
            m = re.search(r"SHA-256 fingerprint: ([0-9a-f]{64})", self.log())
            return m and m.group(1)

        self.fingerprint = wait_for(fingerprint, "the server's fingerprint")

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, "the server to listen")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def enrollment(self, user):
        """The enrollment string: a one-time code, the server, and its key's pin."""
        return self.admin("enroll", "--user", user, "--server", f"127.0.0.1:{self.port}")["enrollment"]


def key_of(home):
    """The store key the app would keep in the platform keystore (fixed per home here)."""
    return hashlib.sha256(str(home).encode()).digest()


class Recorder:
    """A StatusListener and EventListener that keeps what it is told."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def on_status(self, status):
        with self.lock:
            self.items.append(status)

    def on_event(self, event):
        with self.lock:
            self.items.append(event)

    def seen(self):
        with self.lock:
            return list(self.items)


def full_order(times):
    return FfiOrderInput(
        drug="Metoprolol",
        strength="50 mg",
        dose="1 tablet",
        route="oral",
        times=times,
        start=TODAY,
        stop=None,
        delegated=True,
    )


def sync_all(*devices):
    return [d.sync_now() for d in devices]


def utc_offset_minutes():
    """This machine's local offset from UTC, which the app would take from the platform."""
    return int(datetime.datetime.now().astimezone().utcoffset().total_seconds() // 60)


def days_from_today(n):
    return (datetime.date.today() + datetime.timedelta(days=n)).isoformat()


def delegate(nurse, patient, *users):
    """The nurse delegates medication for `patient` to each of `users`, a month either side of
    today (a carer's dose of a delegated order needs one)."""
    for user in users:
        nurse.delegate([patient], user, ["medication"], days_from_today(-30), days_from_today(30),
                       utc_offset_minutes(), TODAY)
