"""info and authentication (doc sections 2 and 3.1)."""

from __future__ import annotations

import pytest
import shotgun_api3

import support


def test_info_unauthenticated(site):
    # A client with no credentials may still call info (params: []).
    sg = shotgun_api3.Shotgun(site.url, connect=False)
    info = sg.info()
    version = info["version"]
    assert isinstance(version, list) and len(version) >= 3
    assert all(isinstance(v, int) for v in version[:3])
    assert tuple(version[:3]) >= (2, 4, 0)


def test_info_drives_client_capabilities(sg):
    info = sg.info()
    caps = sg.server_caps
    assert caps.version == tuple(info["version"][:3])
    page = info.get("api_max_entities_per_page")
    if page is not None:
        assert isinstance(page, int) and page > 0
    if "s3_direct_uploads_enabled" in info:
        assert isinstance(info["s3_direct_uploads_enabled"], bool)


def test_script_auth_ok(sg):
    assert sg.find_one("Project", [], ["name"]) is not None


def test_human_auth_ok(sg_human):
    user = sg_human.find_one("HumanUser", [["login", "is", support.HUMAN_LOGIN]], ["login", "name"])
    assert user is not None and user["login"] == support.HUMAN_LOGIN


def test_silent_script_auth_ok(sg_silent):
    assert isinstance(sg_silent.find("Project", [], ["name"], limit=1), list)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"script_name": support.SCRIPT_NAME, "api_key": "wrong-key"}, id="bad_script_key"),
        pytest.param({"script_name": "no_such_script", "api_key": support.SCRIPT_KEY}, id="unknown_script"),
        pytest.param({"login": support.HUMAN_LOGIN, "password": "wrong-password"}, id="bad_password"),
        pytest.param({"login": "nobody_here", "password": "x"}, id="unknown_login"),
        pytest.param({"session_token": "not-a-session"}, id="bad_session_token"),
    ],
)
def test_bad_credentials_raise_authentication_fault(site, kwargs):
    sg = shotgun_api3.Shotgun(site.url, **kwargs)  # info is unauthenticated, so this connects
    with pytest.raises(shotgun_api3.AuthenticationFault) as exc:
        sg.find("Project", [], ["name"])
    assert str(exc.value), "AuthenticationFault without a message"


def test_bad_credentials_on_write(site, project):
    sg = shotgun_api3.Shotgun(site.url, script_name=support.SCRIPT_NAME, api_key="wrong-key")
    with pytest.raises(shotgun_api3.AuthenticationFault):
        sg.create("Shot", {"project": support.link(project), "code": "never"})


def test_session_token_round_trip(site, sg_human):
    token = sg_human.get_session_token()
    assert isinstance(token, str) and token
    sg = shotgun_api3.Shotgun(site.url, session_token=token)
    assert sg.find_one("HumanUser", [["login", "is", support.HUMAN_LOGIN]], ["login"]) is not None
