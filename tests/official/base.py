"""The `base` module the official client's live-server tests import (`from . import base`).

The official repository keeps its own `tests/base.py` out of the PyPI source distribution, so
this is sgcache's harness, written from what `test_api.py`, `test_api_long.py` and
`test_proxy.py` of the pinned client use: a `TestBase` that opens a connection with the
configured credentials, a `LiveTestBase` that finds or creates the fixture entities once per
class, the two other authentication modes, `gen_entity`, `find_one_await_thumbnail` and the
thumbnail polling constants. Configuration comes from `SG_*` environment variables that
`run.sh` sets for the test site it starts.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import unittest  # noqa: F401  (the tests use base.unittest)

import shotgun_api3

THUMBNAIL_MAX_ATTEMPTS = 10
THUMBNAIL_RETRY_INTERVAL = 0.2

_CONFIG_KEYS = (
    "server_url script_name api_key human_login human_password human_name project_name "
    "shot_code asset_code version_code task_content playlist_code http_proxy session_uuid jenkins"
).split()


class Config:
    """`SG_<KEY>` environment variables; unset keys are None."""

    def __init__(self):
        for key in _CONFIG_KEYS:
            setattr(self, key, os.environ.get(f"SG_{key.upper()}") or None)


class TestBase(unittest.TestCase):
    """A connection per test, authenticated as `auth_mode` says."""

    config = Config()
    human_user = project = shot = asset = version = note = playlist = task = step = None
    local_storage = None
    server_address = None
    session_token = None
    connect = False

    def setUp(self, auth_mode="ApiUser"):
        c = self.config
        if not c.server_url:
            self.skipTest("SG_SERVER_URL is not set")
        self.human_login, self.human_password = c.human_login, c.human_password
        self.server_url, self.script_name, self.api_key = c.server_url, c.script_name, c.api_key
        self.http_proxy = c.http_proxy
        self.sg = shotgun_api3.Shotgun(c.server_url, http_proxy=c.http_proxy, connect=self.connect,
                                       **self._credentials(auth_mode))
        if c.session_uuid:
            self.sg.set_session_uuid(c.session_uuid)

    def _credentials(self, auth_mode):
        c = self.config
        if auth_mode == "ApiUser":
            return {"script_name": c.script_name, "api_key": c.api_key}
        if auth_mode == "HumanUser":
            return {"login": c.human_login, "password": c.human_password}
        if auth_mode == "SessionToken":
            script = shotgun_api3.Shotgun(c.server_url, c.script_name, c.api_key, http_proxy=c.http_proxy)
            self.session_token = script.get_session_token()
            return {"session_token": self.session_token}
        raise ValueError(f"unknown auth_mode {auth_mode!r}")

    @property
    def auth_args(self):
        """The credentials the tests pass to new connections (a user's under `SG_JENKINS`)."""
        if self.config.jenkins:
            return {"login": self.config.human_login, "password": self.config.human_password}
        return {"script_name": self.config.script_name, "api_key": self.config.api_key}

    def tearDown(self):
        self.sg = None


class LiveTestBase(TestBase):
    """Finds or creates the fixture entities once per class, as a live site needs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        c = cls.config
        if not c.server_url:
            return
        sg = shotgun_api3.Shotgun(c.server_url, c.script_name, c.api_key)
        cls.sg_version = tuple(sg.info()["version"][:3])
        cls._make_fixtures(sg)

    @classmethod
    def _make_fixtures(cls, sg):
        c = cls.config
        cls.project = _find_or_create_entity(sg, "Project", {"name": c.project_name})
        cls.human_user = _find_or_create_entity(
            sg, "HumanUser",
            {"name": c.human_name, "login": c.human_login, "password_proxy": c.human_password, "locked_until": None},
            ["login"],
        )
        cls.asset = _find_or_create_entity(sg, "Asset", {"code": c.asset_code, "project": cls.project}, ["code"])
        cls.version = _find_or_create_entity(
            sg, "Version",
            {"project": cls.project, "code": c.version_code, "entity": cls.asset, "user": cls.human_user,
             "sg_frames_aspect_ratio": 13.3, "frame_count": 33},
            ["code", "project"],
        )
        cls.shot = _find_or_create_entity(sg, "Shot", {"code": c.shot_code, "project": cls.project}, ["code", "project"])
        cls.note = _find_or_create_entity(
            sg, "Note", {"project": cls.project, "user": cls.human_user, "content": "anything"}, ["project", "user"]
        )
        cls.playlist = _find_or_create_entity(
            sg, "Playlist", {"project": cls.project, "code": c.playlist_code}, ["code", "project"]
        )
        cls.step = _find_or_create_entity(
            sg, "Step", {"code": "wrapper test step", "entity_type": "Shot"}, ["code", "entity_type"]
        )
        cls.task = _find_or_create_entity(
            sg, "Task",
            {"project": cls.project, "entity": cls.asset, "content": c.task_content, "color": "Black",
             "due_date": "1968-10-13", "task_assignees": [cls.human_user], "sg_status_list": "ip"},
            ["project", "entity", "content"],
        )
        cls.local_storage = _find_or_create_entity(
            sg, "LocalStorage",
            {"code": "api wrapper test storage", "mac_path": "nowhere", "windows_path": "nowhere",
             "linux_path": "nowhere"},
            ["code"],
        )

    def setUp(self, auth_mode="ApiUser"):
        super().setUp(auth_mode)
        self.server_address = self.sg.server_caps.host

    @contextlib.contextmanager
    def gen_entity(self, entity_type, **fields):
        """Creates an entity for the block (`{rnd}` in text values made unique), deletes it after."""
        if entity_type == "HumanUser":
            fields.setdefault("login", "test-python-api-{rnd}")
            fields.setdefault("sg_status_list", "dis")
            fields.setdefault("password_proxy", self.config.human_password)
        rnd = random.randrange(100, 999)
        fields = {k: v.format(rnd=rnd) if isinstance(v, str) else v for k, v in fields.items()}
        entity = self.sg.create(entity_type, fields, return_fields=list(fields))
        try:
            yield entity
        finally:
            assert self.sg.delete(entity_type, entity["id"]) is True

    def find_one_await_thumbnail(self, entity_type, filters, fields=("image",), thumbnail_field_name="image", **kwargs):
        """`find_one`, repeated while the thumbnail is still the site's placeholder."""
        for _ in range(THUMBNAIL_MAX_ATTEMPTS):
            result = self.sg.find_one(entity_type, filters, fields=list(fields), **kwargs)
            value = (result or {}).get(thumbnail_field_name)
            if value and "thumbnail_pending" not in str(value):
                break
            time.sleep(THUMBNAIL_RETRY_INTERVAL)
        return result


class HumanUserAuthLiveTestBase(LiveTestBase):
    def setUp(self):
        super().setUp("HumanUser")


class SessionTokenAuthLiveTestBase(LiveTestBase):
    def setUp(self):
        super().setUp("SessionToken")


def _find_or_create_entity(sg, entity_type, data, keys=("name",)):
    """The entity whose `keys` fields equal `data`'s, created from `data` when there is none."""
    fields = list(data)
    entity = sg.find_one(entity_type, [[k, "is", data[k]] for k in keys], fields=fields)
    entity = entity or sg.create(entity_type, data, return_fields=fields)
    assert entity, f"could not find or create the {entity_type} fixture"
    return entity
