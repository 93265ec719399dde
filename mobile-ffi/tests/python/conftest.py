"""The fixtures of the binding tests: one real server per test module, set up with the admin CLI
(users, people, assignments), and one enrolled device per user."""

import pytest

from mobile_ffi import NaraDevice
from support import ASSIGNMENTS, USERS, Server, key_of


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("nara")
    s = Server(root / "server")
    s.admin("add-org", "--id", "norr", "--name", "Hemtjänst Norr")
    for user, role in USERS.items():
        s.admin("add-user", "--id", user, "--name", user.title(), "--role", role, "--org", "norr")
    for patient, users in ASSIGNMENTS.items():
        s.admin("add-patient", "--id", patient, "--name", f"Person {patient}")
        for user in users:
            s.admin("assign", "--user", user, "--patient", patient)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    return tmp_path_factory.mktemp("devices")


@pytest.fixture(scope="module")
def devices(server, homes):
    """One enrolled device per user with the enrollment string the admin command printed (the
    server's key pinned), the store encrypted with its key."""
    return {
        user: NaraDevice.enroll(str(homes / user), server.enrollment(user), key_of(homes / user), None, False)
        for user in USERS
    }
