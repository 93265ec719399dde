"""'What matters to me' on a phone, through the bindings: the person signs in to the server's
web views with a one-time code from `nara-server admin login-code --patient`, adds a wish, and a
carer's device shows it after syncing, written by the person (role PERSON), read only.

The sign-in here is plain HTTPS from Python (the browser tests are tests/tests/web.rs); the
server's development certificate is self-signed, so this test does not verify it."""

import http.client
import re
import ssl
import urllib.parse

from mobile_ffi import FfiRole


def request(server, method, path, cookie=None, form=None):
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl._create_unverified_context(), timeout=60
    )
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    cookies = {
        v.split("=", 1)[0]: v.split("=", 1)[1].split(";", 1)[0]
        for k, v in response.getheaders()
        if k.lower() == "set-cookie"
    }
    conn.close()
    return response.status, cookies, text


def sign_in_as_person(server, patient):
    code = server.admin("login-code", "--patient", patient)["code"]
    _, cookies, _ = request(server, "GET", "/app/login")
    token = cookies["nara_signin"]
    status, cookies, _ = request(
        server, "POST", "/app/login", f"nara_signin={token}", {"form_token": token, "code": code}
    )
    assert status == 303
    return f"nara_session={cookies['nara_session']}"


def test_a_wish_written_by_the_person_shows_on_a_carers_phone(server, devices):
    session = sign_in_as_person(server, "p1")
    status, _, page = request(server, "GET", "/app/person/p1", session)
    assert status == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    words = "Att få sitta i trädgården på eftermiddagen."
    status, _, _ = request(
        server, "POST", "/app/person/p1/what-matters", session, {"csrf": csrf, "text": words}
    )
    assert status == 303

    anna = devices["anna"]
    anna.sync_now()
    wishes = anna.what_matters("p1")
    assert [w.text for w in wishes] == [words]
    assert wishes[0].author.user == "p1"
    assert wishes[0].author.role == FfiRole.PERSON
    assert wishes[0].author.device == "web-p1"
