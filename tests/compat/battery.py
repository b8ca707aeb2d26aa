"""The read battery: named ``find`` cases, as data.

Two families:

* ``DATASET_CASES`` run against rows the suite creates itself (``build_dataset``) in a fresh
  project. Each case carries a hand-derived expectation in terms of the dataset's symbolic row
  names (``"S1"``, ``"T3"``...):

  - a ``set`` of names: exactly these rows, any order;
  - a ``list`` of names: exactly these rows, in this order;
  - ``Partial(include, exclude)``: these rows must / must not be present (used where the
    protocol reference leaves some rows' membership undocumented, e.g. nulls under a negated
    relation, day-boundary alignment of relative dates).

* ``SEEDED_CASES`` run against the simulator's seeded data. They have no exact expectation
  (the seed is the simulator's business); they are for volume/paging, and for comparing two
  targets (site directly vs. through the proxy) case by case.

Cases marked ``sim_choice=True`` assert behaviour the protocol reference marks as inferred or
unknown; the expectation is what the simulator documents it chose.

Reuse: ``resolve(case, ctx)`` turns a case into concrete ``(entity_type, filters, fields,
kwargs)`` for any client; ``run_case(sg, case, ctx)`` calls ``sg.find``. A proxy suite can build
the dataset once through the site, then run every case through both clients and compare.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Union

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Partial:
    include: frozenset = frozenset()
    exclude: frozenset = frozenset()

    def __init__(self, include=(), exclude=()):
        object.__setattr__(self, "include", frozenset(include))
        object.__setattr__(self, "exclude", frozenset(exclude))


Expectation = Union[set, list, Partial, None]
Filters = Union[list, Callable[["Ctx"], list]]


@dataclass
class ReadCase:
    name: str
    entity_type: str
    filters: Filters
    fields: list = field(default_factory=lambda: ["id"])
    kwargs: dict | Callable[["Ctx"], dict] = field(default_factory=dict)
    expect: Expectation = None
    # Add the dataset's scoping condition (project, or the created ids for non-project types).
    scoped: bool = True
    sim_choice: bool = False
    # Optional per-row value checks: {row name: {field: value or callable(ctx) -> value}}.
    expect_values: dict = field(default_factory=dict)
    # Optional invariant over the returned rows (seeded cases).
    check: Callable[[list], None] | None = None

    def __repr__(self) -> str:  # keeps pytest ids short
        return f"ReadCase({self.name})"


class Ctx:
    """What ``build_dataset`` created: symbolic name -> entity, plus the reference instants."""

    def __init__(self, project: dict, today: dt.date, now: dt.datetime, t0: dt.datetime):
        self.project = project
        self.today = today
        self.now = now
        self.t0 = t0
        self.rows: dict[str, dict] = {}
        self.name_of: dict[tuple, str] = {}

    def add(self, name: str, entity: dict) -> dict:
        self.rows[name] = entity
        self.name_of[(entity["type"], entity["id"])] = name
        return entity

    def link(self, name: str) -> dict:
        e = self.rows[name]
        return {"type": e["type"], "id": e["id"]}

    def id(self, name: str) -> int:
        return self.rows[name]["id"]

    def day(self, offset: int) -> dt.date:
        return self.today + dt.timedelta(days=offset)

    def scope(self, entity_type: str) -> list:
        if entity_type == "Step":
            return [["id", "in", [e["id"] for e in self.rows.values() if e["type"] == "Step"]]]
        return [["project", "is", {"type": "Project", "id": self.project["id"]}]]

    def names(self, rows: list) -> list[str]:
        return [self.name_of.get((r["type"], r["id"]), f"{r['type']}:{r['id']}") for r in rows]


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

V1_TIME = dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
V2_TIME = dt.datetime(2024, 5, 2, 12, 30, 0, tzinfo=UTC)


def build_dataset(sg, project: dict) -> Ctx:
    """Create the battery's rows in ``project`` (and three global Steps). Returns the context."""
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ctx = Ctx(project, now.date(), now, now - dt.timedelta(seconds=2))
    p = {"type": "Project", "id": project["id"]}

    def mk(name, entity_type, data):
        if entity_type != "Step":
            data = {"project": p, **data}
        return ctx.add(name, sg.create(entity_type, data))

    mk("SQA", "Sequence", {"code": "sq_alpha", "sg_status_list": "ip", "sg_due_1": dt.date(2024, 3, 15)})
    mk("SQB", "Sequence", {"code": "sq_beta", "sg_status_list": "fin", "description": "Beta sequence"})

    mk("AH", "Asset", {"code": "hero_char", "sg_asset_type": "Character", "tag_list": ["hero"]})
    mk("AP", "Asset", {"code": "prop_cup", "sg_asset_type": "Prop"})
    mk("AE", "Asset", {"code": "env_forest", "sg_asset_type": "Environment"})
    mk("AN", "Asset", {"code": "misc_thing", "sg_asset_type": None})

    L = ctx.link
    mk("S1", "Shot", {"code": "sh010", "description": "First shot", "sg_status_list": "ip",
                      "sg_cut_in": 1001, "sg_cut_out": 1050, "sg_sequence": L("SQA"),
                      "assets": [L("AH"), L("AP")], "tag_list": ["hero", "fx"]})
    mk("S2", "Shot", {"code": "sh020", "description": "Second <shot> ünïcödé", "sg_status_list": "fin",
                      "sg_cut_in": 1001, "sg_cut_out": 1100, "sg_sequence": L("SQA"),
                      "assets": [L("AH")], "tag_list": ["fx"]})
    mk("S3", "Shot", {"code": "SH030", "description": None, "sg_status_list": "wtg",
                      "sg_cut_in": None, "sg_cut_out": 0, "sg_sequence": L("SQB"),
                      "assets": [], "tag_list": []})
    mk("S4", "Shot", {"code": "sh040_extra", "description": "Fourth", "sg_status_list": "ip",
                      "sg_cut_in": 950, "sg_cut_out": None, "sg_sequence": None,
                      "assets": [L("AE")], "tag_list": ["bg"]})
    mk("S5", "Shot", {"code": "sh050", "description": "Fifth", "sg_status_list": "hld",
                      "sg_cut_in": 1200, "sg_cut_out": 1300, "sg_sequence": L("SQB"),
                      "assets": [L("AP"), L("AE")]})

    mk("T1", "Task", {"content": "anim", "entity": L("S1"), "sg_status_list": "ip",
                      "due_date": ctx.day(3), "start_date": dt.date(2024, 1, 10),
                      "milestone": True, "color": "255,0,0", "est_in_mins": 600})
    mk("T2", "Task", {"content": "comp", "entity": L("S1"), "sg_status_list": "fin",
                      "due_date": dt.date(2024, 2, 1), "start_date": dt.date(2024, 1, 20),
                      "milestone": False, "color": "pipeline_step", "est_in_mins": 120})
    mk("T3", "Task", {"content": "model", "entity": L("AH"), "sg_status_list": "wtg",
                      "due_date": None, "start_date": dt.date(2024, 1, 15),
                      "milestone": False, "color": "pipeline_step"})
    mk("T4", "Task", {"content": "layout", "entity": L("SQA"), "sg_status_list": "rdy",
                      "due_date": ctx.day(-3), "milestone": False, "color": "0,128,255", "est_in_mins": 0})
    mk("T5", "Task", {"content": "lighting", "entity": None, "sg_status_list": "hld",
                      "due_date": ctx.day(0), "milestone": True, "color": "10,20,30"})

    mk("V1", "Version", {"code": "sh010_v001", "entity": L("S1"), "sg_task": L("T1"),
                         "sg_frames_aspect_ratio": 1.78, "flagged": True, "sg_first_frame": 1001,
                         "media_center_import_time": V1_TIME})
    mk("V2", "Version", {"code": "sh010_v002", "entity": L("S1"), "sg_task": L("T1"),
                         "sg_frames_aspect_ratio": 2.39, "flagged": False, "sg_first_frame": 1001,
                         "media_center_import_time": V2_TIME})
    mk("V3", "Version", {"code": "hero_v001", "entity": L("AH"), "sg_task": L("T3"),
                         "sg_frames_aspect_ratio": None, "flagged": False, "sg_first_frame": None,
                         "media_center_import_time": None})
    mk("V4", "Version", {"code": "sq_v001", "entity": L("SQA"), "sg_frames_aspect_ratio": 1.0,
                         "flagged": False, "sg_first_frame": 1,
                         "media_center_import_time": now - dt.timedelta(hours=2)})
    mk("V5", "Version", {"code": "sq_v002", "entity": L("SQA"), "sg_frames_aspect_ratio": 1.0,
                         "flagged": False, "sg_first_frame": 1,
                         "media_center_import_time": now + dt.timedelta(hours=2)})

    mk("N1", "Note", {"subject": "first note", "content": "about sh010 and the hero",
                      "note_links": [L("S1"), L("AH")], "sg_note_type": None})
    mk("N2", "Note", {"subject": "second note", "content": "about a version", "note_links": [L("V1")]})
    mk("N3", "Note", {"subject": "orphan note", "content": None, "note_links": []})

    tag = project["name"]
    mk("ST1", "Step", {"code": f"{tag}_shotstep", "short_name": "SS", "entity_type": "Shot", "color": "50,50,50"})
    mk("ST2", "Step", {"code": f"{tag}_assetstep", "short_name": "AS", "entity_type": "Asset", "color": "60,60,60"})
    mk("ST3", "Step", {"code": f"{tag}_nostep", "short_name": "NS", "entity_type": None})

    # S5 exists only as a retired row.
    assert sg.delete("Shot", ctx.id("S5")) is True
    return ctx


# --------------------------------------------------------------------------------------------
# Cases on the dataset
# --------------------------------------------------------------------------------------------

SHOTS = {"S1", "S2", "S3", "S4"}
TASKS = {"T1", "T2", "T3", "T4", "T5"}
VERSIONS = {"V1", "V2", "V3", "V4", "V5"}


def C(name, entity_type, filters, expect, fields=None, **extra) -> ReadCase:
    return ReadCase(name, entity_type, filters, fields or ["id"], expect=expect, **extra)


def _l(name):
    return lambda c: c.link(name)


DATASET_CASES: list[ReadCase] = [
    # ---- no filter / scope only
    C("shot_all_active", "Shot", [], SHOTS),
    # ---- text
    C("text_is", "Shot", [["code", "is", "sh010"]], {"S1"}),
    C("text_is_case_insensitive", "Shot", [["code", "is", "SH010"]], {"S1"}),
    C("text_is_not", "Shot", [["code", "is_not", "sh010"]], {"S2", "S3", "S4"}),
    C("text_contains", "Shot", [["code", "contains", "04"]], {"S4"}),
    C("text_contains_case_insensitive", "Shot", [["code", "contains", "SH0"]], SHOTS),
    C("text_not_contains", "Shot", [["code", "not_contains", "extra"]], {"S1", "S2", "S3"}),
    C("text_not_contains_matches_null", "Shot", [["description", "not_contains", "shot"]], {"S3", "S4"}),
    C("text_starts_with", "Shot", [["code", "starts_with", "sh01"]], {"S1"}),
    C("text_starts_with_case_insensitive", "Shot", [["code", "starts_with", "Sh0"]], SHOTS),
    C("text_ends_with", "Shot", [["code", "ends_with", "_EXTRA"]], {"S4"}),
    C("text_in", "Shot", [["code", "in", ["sh010", "SH020", "nope"]]], {"S1", "S2"}),
    C("text_not_in", "Shot", [["code", "not_in", ["sh010", "sh020"]]], {"S3", "S4"}),
    C("text_is_null", "Shot", [["description", "is", None]], {"S3"}),
    C("text_is_not_null", "Shot", [["description", "is_not", None]], {"S1", "S2", "S4"}),
    C("text_unicode_contains", "Shot", [["description", "contains", "ünïcödé"]], {"S2"},
      fields=["description"], expect_values={"S2": {"description": "Second <shot> ünïcödé"}}),
    C("text_lt_sign_contains", "Shot", [["description", "contains", "<shot>"]], {"S2"}),
    # ---- number
    C("number_is", "Shot", [["sg_cut_in", "is", 1001]], {"S1", "S2"}),
    C("number_is_not_includes_null", "Shot", [["sg_cut_in", "is_not", 1001]], {"S3", "S4"}, sim_choice=True),
    C("number_less_than", "Shot", [["sg_cut_in", "less_than", 1001]], {"S4"}),
    C("number_greater_than", "Shot", [["sg_cut_in", "greater_than", 1000]], {"S1", "S2"}),
    C("number_greater_than_none", "Shot", [["sg_cut_in", "greater_than", 1001]], set()),
    C("number_between_inclusive", "Shot", [["sg_cut_in", "between", [950, 1001]]], {"S1", "S2", "S4"}),
    C("number_not_between", "Shot", [["sg_cut_in", "not_between", [1000, 1100]]], Partial({"S4"}, {"S1", "S2"})),
    C("number_in", "Shot", [["sg_cut_in", "in", [950, 1001]]], {"S1", "S2", "S4"}),
    C("number_not_in_includes_null", "Shot", [["sg_cut_in", "not_in", [1001]]], {"S3", "S4"}, sim_choice=True),
    C("number_is_null", "Shot", [["sg_cut_in", "is", None]], {"S3"}),
    C("number_is_not_null_matches_zero", "Shot", [["sg_cut_out", "is_not", None]], {"S1", "S2", "S3"}),
    C("number_is_zero", "Shot", [["sg_cut_out", "is", 0]], {"S3"}),
    C("id_in", "Shot", lambda c: [["id", "in", [c.id("S1"), c.id("S3")]]], {"S1", "S3"}),
    C("id_greater_than", "Shot", lambda c: [["id", "greater_than", c.id("S2")]], {"S3", "S4"}),
    C("id_is", "Shot", lambda c: [["id", "is", c.id("S4")]], {"S4"}),
    # ---- float
    C("float_is", "Version", [["sg_frames_aspect_ratio", "is", 1.78]], {"V1"}),
    C("float_greater_than", "Version", [["sg_frames_aspect_ratio", "greater_than", 2.0]], {"V2"}),
    C("float_less_than", "Version", [["sg_frames_aspect_ratio", "less_than", 1.5]], {"V4", "V5"}),
    C("float_between", "Version", [["sg_frames_aspect_ratio", "between", [1.0, 1.8]]], {"V1", "V4", "V5"}),
    C("float_in", "Version", [["sg_frames_aspect_ratio", "in", [2.39, 1.0]]], {"V2", "V4", "V5"}),
    C("float_is_null", "Version", [["sg_frames_aspect_ratio", "is", None]], {"V3"}),
    C("float_is_not_includes_null", "Version", [["sg_frames_aspect_ratio", "is_not", 1.0]], {"V1", "V2", "V3"}, sim_choice=True),
    # ---- checkbox
    C("checkbox_is_true", "Version", [["flagged", "is", True]], {"V1"}),
    C("checkbox_is_false", "Version", [["flagged", "is", False]], {"V2", "V3", "V4", "V5"}),
    C("checkbox_is_not_true", "Version", [["flagged", "is_not", True]], {"V2", "V3", "V4", "V5"}),
    C("checkbox_task_milestone", "Task", [["milestone", "is", True]], {"T1", "T5"}),
    # ---- date
    C("date_is", "Task", lambda c: [["due_date", "is", c.day(3)]], {"T1"}),
    C("date_is_not_includes_null", "Task", [["due_date", "is_not", dt.date(2024, 2, 1)]], {"T1", "T3", "T4", "T5"}, sim_choice=True),
    C("date_greater_than", "Task", lambda c: [["due_date", "greater_than", c.day(0)]], {"T1"}),
    C("date_less_than", "Task", lambda c: [["due_date", "less_than", c.day(0)]], {"T2", "T4"}),
    C("date_between", "Task", lambda c: [["due_date", "between", [c.day(-3), c.day(0)]]], {"T4", "T5"}),
    C("date_in", "Task", lambda c: [["due_date", "in", [dt.date(2024, 2, 1), c.day(0)]]], {"T2", "T5"}),
    C("date_not_in", "Task", lambda c: [["due_date", "not_in", [dt.date(2024, 2, 1), c.day(0)]]], Partial({"T1", "T4"}, {"T2", "T5"})),
    C("date_is_null", "Task", [["due_date", "is", None]], {"T3"}),
    C("date_in_last", "Task", [["due_date", "in_last", 7, "DAY"]], Partial({"T4"}, {"T1", "T2", "T3"})),
    C("date_not_in_last", "Task", [["due_date", "not_in_last", 7, "DAY"]], Partial({"T1", "T2"}, {"T4"})),
    C("date_in_next", "Task", [["due_date", "in_next", 7, "DAY"]], Partial({"T1"}, {"T2", "T3", "T4"})),
    C("date_not_in_next", "Task", [["due_date", "not_in_next", 7, "DAY"]], Partial({"T2", "T4"}, {"T1"})),
    C("date_in_last_weeks", "Task", [["due_date", "in_last", 2, "WEEK"]], Partial({"T4"}, {"T1", "T2"})),
    C("date_in_last_month", "Task", [["due_date", "in_last", 1, "MONTH"]], Partial({"T4"}, {"T1", "T2", "T3"})),
    C("date_in_next_year", "Task", [["due_date", "in_next", 1, "YEAR"]], Partial({"T1"}, {"T2", "T3", "T4"})),
    C("date_in_last_year_hours", "Task", [["due_date", "in_last", 24 * 30, "HOUR"]], Partial({"T4"}, {"T1", "T2"})),
    C("date_in_calendar_day_today", "Task", [["due_date", "in_calendar_day", 0]], Partial({"T5"}, {"T1", "T2", "T4"})),
    C("date_in_calendar_day_plus3", "Task", [["due_date", "in_calendar_day", 3]], Partial({"T1"}, {"T2", "T4", "T5"})),
    C("date_in_calendar_week", "Task", [["due_date", "in_calendar_week", 0]], Partial({"T5"}, {"T2"})),
    C("date_in_calendar_month", "Task", [["due_date", "in_calendar_month", 0]], Partial({"T5"}, {"T2"})),
    C("date_in_calendar_year", "Task", [["due_date", "in_calendar_year", 0]], Partial({"T5"}, {"T2"})),
    C("date_in_calendar_year_2024", "Task", lambda c: [["due_date", "in_calendar_year", 2024 - c.today.year]], Partial({"T2"}, {"T5"})),
    # ---- date_time (instants; the client sends UTC)
    C("datetime_is", "Version", [["media_center_import_time", "is", V1_TIME]], {"V1"}),
    C("datetime_greater_than", "Version", [["media_center_import_time", "greater_than", V1_TIME]], {"V2", "V4", "V5"}),
    C("datetime_less_than", "Version", [["media_center_import_time", "less_than", dt.datetime(2024, 5, 2, tzinfo=UTC)]], {"V1"}),
    C("datetime_between", "Version", [["media_center_import_time", "between", [dt.datetime(2024, 5, 1, tzinfo=UTC), dt.datetime(2024, 5, 3, tzinfo=UTC)]]], {"V1", "V2"}),
    C("datetime_in_last_day", "Version", [["media_center_import_time", "in_last", 1, "DAY"]], {"V4"}),
    C("datetime_in_last_hours", "Version", [["media_center_import_time", "in_last", 3, "HOUR"]], {"V4"}),
    C("datetime_in_last_hour_none", "Version", [["media_center_import_time", "in_last", 1, "HOUR"]], set()),
    C("datetime_in_next_day", "Version", [["media_center_import_time", "in_next", 1, "DAY"]], {"V5"}),
    C("datetime_not_in_last", "Version", [["media_center_import_time", "not_in_last", 1, "DAY"], ["media_center_import_time", "is_not", None]], {"V1", "V2", "V5"}),
    C("datetime_not_in_next", "Version", [["media_center_import_time", "not_in_next", 1, "DAY"], ["media_center_import_time", "is_not", None]], {"V1", "V2", "V4"}),
    C("datetime_in_calendar_year_2024", "Version", lambda c: [["media_center_import_time", "in_calendar_year", 2024 - c.today.year]], {"V1", "V2"}),
    C("datetime_is_null", "Version", [["media_center_import_time", "is", None]], {"V3"}),
    C("created_at_in_last", "Shot", [["created_at", "in_last", 1, "HOUR"]], SHOTS),
    C("created_at_greater_than", "Shot", lambda c: [["created_at", "greater_than", c.t0]], SHOTS),
    C("created_at_in_calendar_year", "Shot", [["created_at", "in_calendar_year", 0]], Partial(SHOTS)),
    C("created_at_in_calendar_day", "Shot", [["created_at", "in_calendar_day", 0]], Partial(SHOTS), sim_choice=True),
    C("created_at_in_calendar_week", "Shot", [["created_at", "in_calendar_week", 0]], Partial(SHOTS), sim_choice=True),
    C("created_at_in_calendar_month", "Shot", [["created_at", "in_calendar_month", 0]], Partial(SHOTS), sim_choice=True),
    C("created_at_in_calendar_day_yesterday", "Shot", [["created_at", "in_calendar_day", -1]], set(), sim_choice=True),
    C("created_at_not_in_last", "Shot", [["created_at", "not_in_last", 1, "DAY"]], set()),
    # ---- duration (minutes; number-like relations)
    C("duration_is", "Task", [["est_in_mins", "is", 600]], {"T1"}),
    C("duration_is_zero", "Task", [["est_in_mins", "is", 0]], {"T4"}),
    C("duration_greater_than", "Task", [["est_in_mins", "greater_than", 100]], {"T1", "T2"}),
    C("duration_less_than", "Task", [["est_in_mins", "less_than", 200]], {"T2", "T4"}),
    C("duration_between", "Task", [["est_in_mins", "between", [0, 120]]], {"T2", "T4"}),
    C("duration_in", "Task", [["est_in_mins", "in", [0, 600]]], {"T1", "T4"}),
    C("duration_is_null", "Task", [["est_in_mins", "is", None]], {"T3", "T5"}),
    # ---- list
    C("list_is", "Asset", [["sg_asset_type", "is", "Character"]], {"AH"}),
    C("list_is_not_includes_null", "Asset", [["sg_asset_type", "is_not", "Prop"]], {"AH", "AE", "AN"}, sim_choice=True),
    C("list_in", "Asset", [["sg_asset_type", "in", ["Prop", "Environment"]]], {"AP", "AE"}),
    C("list_not_in", "Asset", [["sg_asset_type", "not_in", ["Prop"]]], Partial({"AH", "AE"}, {"AP"})),
    C("list_is_null", "Asset", [["sg_asset_type", "is", None]], {"AN"}),
    # ---- status_list
    C("status_is", "Shot", [["sg_status_list", "is", "ip"]], {"S1", "S4"}),
    C("status_is_not", "Shot", [["sg_status_list", "is_not", "ip"]], {"S2", "S3"}),
    C("status_in", "Shot", [["sg_status_list", "in", ["fin", "wtg"]]], {"S2", "S3"}),
    C("status_not_in", "Shot", [["sg_status_list", "not_in", ["ip", "fin"]]], {"S3"}),
    # ---- entity
    C("entity_is", "Shot", lambda c: [["sg_sequence", "is", c.link("SQA")]], {"S1", "S2"}),
    C("entity_is_not_includes_null", "Shot", lambda c: [["sg_sequence", "is_not", c.link("SQA")]], {"S3", "S4"}),
    C("entity_in", "Shot", lambda c: [["sg_sequence", "in", [c.link("SQA"), c.link("SQB")]]], {"S1", "S2", "S3"}),
    C("entity_not_in", "Shot", lambda c: [["sg_sequence", "not_in", [c.link("SQA")]]], Partial({"S3"}, {"S1", "S2"})),
    C("entity_is_null", "Shot", [["sg_sequence", "is", None]], {"S4"}),
    C("entity_is_not_null", "Shot", [["sg_sequence", "is_not", None]], {"S1", "S2", "S3"}),
    C("entity_type_is", "Task", [["entity", "type_is", "Shot"]], {"T1", "T2"}),
    C("entity_type_is_asset", "Task", [["entity", "type_is", "Asset"]], {"T3"}),
    C("entity_type_is_not", "Task", [["entity", "type_is_not", "Shot"]], Partial({"T3", "T4"}, {"T1", "T2"})),
    C("entity_type_is_null", "Task", [["entity", "type_is", None]], {"T5"}, sim_choice=True),
    C("entity_name_contains", "Shot", [["sg_sequence", "name_contains", "alpha"]], {"S1", "S2"}),
    C("entity_name_not_contains", "Shot", [["sg_sequence", "name_not_contains", "alpha"]], Partial({"S3"}, {"S1", "S2"})),
    C("entity_name_is", "Shot", [["sg_sequence", "name_is", "sq_beta"]], {"S3"}),
    C("entity_name_is_case_insensitive", "Shot", [["sg_sequence", "name_is", "SQ_BETA"]], {"S3"}, sim_choice=True),
    C("entity_name_starts_with", "Shot", [["sg_sequence", "name_starts_with", "sq_a"]], {"S1", "S2"}),
    C("entity_name_ends_with", "Shot", [["sg_sequence", "name_ends_with", "beta"]], {"S3"}),
    C("entity_task_entity_is", "Task", lambda c: [["entity", "is", c.link("S1")]], {"T1", "T2"}),
    # ---- multi_entity
    C("multi_is", "Shot", lambda c: [["assets", "is", c.link("AH")]], {"S1", "S2"}),
    C("multi_is_not", "Shot", lambda c: [["assets", "is_not", c.link("AH")]], {"S3", "S4"}),
    C("multi_in", "Shot", lambda c: [["assets", "in", [c.link("AP"), c.link("AE")]]], {"S1", "S4"}),
    C("multi_not_in", "Shot", lambda c: [["assets", "not_in", [c.link("AP"), c.link("AE")]]], {"S2", "S3"}),
    C("multi_is_empty", "Shot", [["assets", "is", None]], {"S3"}),
    C("multi_is_not_empty", "Shot", [["assets", "is_not", None]], {"S1", "S2", "S4"}),
    C("multi_type_is", "Shot", [["assets", "type_is", "Asset"]], {"S1", "S2", "S4"}),
    C("multi_type_is_not", "Shot", [["assets", "type_is_not", "Asset"]], Partial((), {"S1", "S2", "S4"})),
    C("multi_name_contains", "Shot", [["assets", "name_contains", "cup"]], {"S1"}),
    C("multi_name_not_contains", "Shot", [["assets", "name_not_contains", "hero"]], Partial({"S4"}, {"S1", "S2"})),
    C("multi_backref_asset_shots", "Asset", lambda c: [["shots", "is", c.link("S1")]], {"AH", "AP"}, sim_choice=True),
    # polymorphic multi_entity (Note.note_links)
    C("poly_multi_is", "Note", lambda c: [["note_links", "is", c.link("AH")]], {"N1"}),
    C("poly_multi_type_is_version", "Note", [["note_links", "type_is", "Version"]], {"N2"}),
    C("poly_multi_type_is_shot", "Note", [["note_links", "type_is", "Shot"]], {"N1"}),
    C("poly_multi_type_is_not", "Note", [["note_links", "type_is_not", "Version"]], Partial({"N1"}, {"N2"})),
    C("poly_multi_name_contains", "Note", [["note_links", "name_contains", "v001"]], {"N2"}),
    C("poly_multi_in", "Note", lambda c: [["note_links", "in", [c.link("V1"), c.link("S1")]]], {"N1", "N2"}),
    C("poly_multi_empty", "Note", [["note_links", "is", None]], {"N3"}),
    C("poly_multi_deep_shot", "Note", [["note_links.Shot.code", "is", "sh010"]], {"N1"}),
    C("poly_multi_deep_version", "Note", [["note_links.Version.sg_frames_aspect_ratio", "greater_than", 1.5]], {"N2"}),
    C("poly_multi_deep_wrong_type", "Note", [["note_links.Asset.code", "is", "sh010"]], set()),
    C("note_text_null_not_contains", "Note", [["content", "not_contains", "version"]], {"N1", "N3"}),
    # ---- tag_list
    C("tag_is", "Shot", [["tag_list", "is", "fx"]], {"S1", "S2"}),
    C("tag_is_not", "Shot", [["tag_list", "is_not", "fx"]], {"S3", "S4"}),
    C("tag_name_contains", "Shot", [["tag_list", "name_contains", "her"]], {"S1"}),
    C("tag_name_not_contains", "Shot", [["tag_list", "name_not_contains", "f"]], Partial({"S4"}, {"S1", "S2"})),
    C("tag_is_empty", "Shot", [["tag_list", "is", None]], {"S3"}),
    # ---- entity_type
    C("entity_type_field_is", "Step", [["entity_type", "is", "Shot"]], {"ST1"}),
    C("entity_type_field_is_not", "Step", [["entity_type", "is_not", "Shot"]], Partial({"ST2"}, {"ST1"})),
    C("entity_type_field_in", "Step", [["entity_type", "in", ["Shot", "Asset"]]], {"ST1", "ST2"}),
    C("entity_type_field_not_in", "Step", [["entity_type", "not_in", ["Shot"]]], Partial({"ST2"}, {"ST1"})),
    C("entity_type_field_is_null", "Step", [["entity_type", "is", None]], {"ST3"}),
    # ---- color
    C("color_is", "Task", [["color", "is", "pipeline_step"]], {"T2", "T3"}),
    C("color_is_not", "Task", [["color", "is_not", "pipeline_step"]], {"T1", "T4", "T5"}),
    C("color_in", "Task", [["color", "in", ["255,0,0", "0,128,255"]]], {"T1", "T4"}),
    C("color_not_in", "Task", [["color", "not_in", ["pipeline_step"]]], {"T1", "T4", "T5"}),
    # ---- logical groups
    C("group_any", "Shot", [{"filter_operator": "any", "filters": [
        ["sg_status_list", "is", "fin"], ["sg_cut_in", "less_than", 1000]]}], {"S2", "S4"}),
    C("group_all_inside_any", "Shot", lambda c: [{"filter_operator": "any", "filters": [
        {"filter_operator": "all", "filters": [["sg_status_list", "is", "ip"], ["sg_cut_in", "is", 1001]]},
        {"filter_operator": "all", "filters": [["sg_sequence", "is", c.link("SQB")], ["sg_cut_out", "is", 0]]}]}],
      {"S1", "S3"}),
    C("group_any_inside_all", "Shot", lambda c: [["sg_status_list", "is", "ip"], {"filter_operator": "or", "filters": [
        ["code", "is", "sh010"], ["assets", "is", c.link("AE")]]}], {"S1", "S4"}),
    C("group_three_levels", "Shot", [{"filter_operator": "all", "filters": [
        {"filter_operator": "any", "filters": [
            {"filter_operator": "all", "filters": [["code", "starts_with", "sh0"], ["sg_cut_in", "is", None]]},
            ["tag_list", "is", "bg"]]}]}], {"S3", "S4"}),
    C("top_level_filter_operator_any", "Shot", lambda c: [["id", "is", c.id("S1")], ["id", "is", c.id("S3")]], {"S1", "S3"},
      scoped=False, kwargs={"filter_operator": "any"}),
    # ---- deep paths in filters
    C("deep_entity_text", "Shot", [["sg_sequence.Sequence.code", "is", "sq_beta"]], {"S3"}),
    C("deep_entity_status", "Shot", [["sg_sequence.Sequence.sg_status_list", "is", "ip"]], {"S1", "S2"}),
    C("deep_polymorphic_shot", "Task", [["entity.Shot.code", "is", "sh010"]], {"T1", "T2"}),
    C("deep_polymorphic_asset_list", "Task", [["entity.Asset.sg_asset_type", "is", "Character"]], {"T3"}),
    C("deep_two_hops", "Task", [["entity.Shot.sg_sequence.Sequence.code", "is", "sq_alpha"]], {"T1", "T2"}, sim_choice=True),
    C("deep_version_shot_status", "Version", [["entity.Shot.sg_status_list", "in", ["ip"]]], {"V1", "V2"}),
    C("deep_version_task", "Version", [["sg_task.Task.content", "is", "anim"]], {"V1", "V2"}),
    C("deep_multi_existential", "Shot", [["assets.Asset.code", "is", "prop_cup"]], {"S1"}),
    C("deep_multi_list", "Shot", [["assets.Asset.sg_asset_type", "is", "Character"]], {"S1", "S2"}),
    C("deep_multi_negation_absorbed", "Shot", [["assets.Asset.code", "is_not", "hero_char"]], {"S3", "S4"}),
    C("deep_number", "Version", [["entity.Shot.sg_cut_out", "between", [1000, 1060]]], {"V1", "V2"}),
    # ---- deep return fields
    C("deep_return_fields", "Shot", [["sg_status_list", "in", ["ip", "wtg"]]], {"S1", "S3", "S4"},
      fields=["code", "sg_sequence", "sg_sequence.Sequence.code", "sg_sequence.Sequence.sg_status_list"],
      expect_values={
          "S1": {"sg_sequence.Sequence.code": "sq_alpha", "sg_sequence.Sequence.sg_status_list": "ip",
                 "sg_sequence": lambda c: {**c.link("SQA"), "name": "sq_alpha"}},
          "S3": {"sg_sequence.Sequence.code": "sq_beta", "sg_sequence.Sequence.sg_status_list": "fin"},
          "S4": {"sg_sequence.Sequence.code": None, "sg_sequence": None},
      }),
    C("deep_return_polymorphic", "Task", [], TASKS,
      fields=["content", "entity", "entity.Shot.code", "entity.Asset.sg_asset_type"],
      expect_values={
          "T1": {"entity.Shot.code": "sh010", "entity.Asset.sg_asset_type": None,
                 "entity": lambda c: {**c.link("S1"), "name": "sh010"}},
          "T3": {"entity.Shot.code": None, "entity.Asset.sg_asset_type": "Character"},
          "T4": {"entity.Shot.code": None, "entity": lambda c: {**c.link("SQA"), "name": "sq_alpha"}},
          "T5": {"entity.Shot.code": None, "entity": None},
      }),
    C("return_link_names_by_display_field", "Version", [["code", "is", "sh010_v001"]], {"V1"},
      fields=["entity", "sg_task", "project"],
      expect_values={"V1": {"entity": lambda c: {**c.link("S1"), "name": "sh010"},
                            "sg_task": lambda c: {**c.link("T1"), "name": "anim"},
                            "project": lambda c: {"type": "Project", "id": c.project["id"], "name": c.project["name"]}}}),
    C("return_multi_entity_and_tags", "Shot", [["code", "is", "sh010"]], {"S1"},
      fields=["assets", "tag_list", "sg_cut_in", "description"],
      expect_values={"S1": {"assets": lambda c: [{**c.link("AH"), "name": "hero_char"}, {**c.link("AP"), "name": "prop_cup"}],
                            "tag_list": ["hero", "fx"], "sg_cut_in": 1001, "description": "First shot"}}),
    C("return_typed_values", "Version", [["code", "is", "sh010_v002"]], {"V2"},
      fields=["sg_frames_aspect_ratio", "flagged", "media_center_import_time"],
      expect_values={"V2": {"sg_frames_aspect_ratio": 2.39, "flagged": False, "media_center_import_time": V2_TIME}}),
    C("return_dates", "Task", [["content", "is", "comp"]], {"T2"},
      fields=["due_date", "start_date", "color", "milestone"],
      expect_values={"T2": {"due_date": "2024-02-01", "start_date": "2024-01-20", "color": "pipeline_step", "milestone": False}}),
    # ---- sorting
    C("sort_number_desc_then_text", "Shot", [["sg_cut_in", "is_not", None]], ["S1", "S2", "S4"],
      kwargs={"order": [{"field_name": "sg_cut_in", "direction": "desc"}, {"field_name": "code", "direction": "asc"}]}),
    C("sort_text_asc", "Shot", [["sg_status_list", "is_not", "wtg"]], ["S1", "S2", "S4"],
      kwargs={"order": [{"field_name": "code", "direction": "asc"}]}),
    C("sort_text_desc", "Shot", [["sg_status_list", "is_not", "wtg"]], ["S4", "S2", "S1"],
      kwargs={"order": [{"field_name": "code", "direction": "desc"}]}),
    C("sort_datetime_asc", "Version", [["media_center_import_time", "is_not", None]], ["V1", "V2", "V4", "V5"],
      kwargs={"order": [{"field_name": "media_center_import_time", "direction": "asc"}]}),
    C("sort_date_desc", "Task", [["due_date", "is_not", None]], ["T1", "T5", "T4", "T2"],
      kwargs={"order": [{"field_name": "due_date", "direction": "desc"}]}),
    C("sort_float_then_text_desc", "Version", [["sg_frames_aspect_ratio", "is_not", None]], ["V5", "V4", "V1", "V2"],
      kwargs={"order": [{"field_name": "sg_frames_aspect_ratio", "direction": "asc"}, {"field_name": "code", "direction": "desc"}]}),
    C("sort_legacy_column_key", "Shot", [["sg_cut_in", "is_not", None]], ["S4", "S1", "S2"],
      kwargs={"order": [{"column": "sg_cut_in"}, {"field_name": "code", "direction": "asc"}]}),
    C("sort_deep_path", "Shot", [["sg_sequence", "is_not", None]], ["S3", "S1", "S2"],
      kwargs={"order": [{"field_name": "sg_sequence.Sequence.code", "direction": "desc"}, {"field_name": "code", "direction": "asc"}]},
      sim_choice=True),
    C("default_order_is_id_asc", "Shot", [], ["S1", "S2", "S3", "S4"]),
    # ---- limit / page
    C("limit", "Shot", [], ["S1", "S2"], kwargs={"order": [{"field_name": "id", "direction": "asc"}], "limit": 2}),
    C("limit_page_2", "Shot", [], ["S3", "S4"], kwargs={"order": [{"field_name": "id", "direction": "asc"}], "limit": 2, "page": 2}),
    C("limit_page_past_end", "Shot", [], [], kwargs={"order": [{"field_name": "id", "direction": "asc"}], "limit": 2, "page": 3}),
    C("page_without_limit", "Shot", [], ["S1", "S2", "S3", "S4"], kwargs={"page": 1}),
    # ---- retired rows
    C("retired_only", "Shot", [], {"S5"}, kwargs={"retired_only": True}),
    C("retired_only_filtered", "Shot", lambda c: [["sg_sequence", "is", c.link("SQB")]], {"S5"}, kwargs={"retired_only": True}),
    C("retired_only_no_match", "Shot", [["sg_status_list", "is", "ip"]], set(), kwargs={"retired_only": True}),
    C("retired_excluded_from_multi_filter", "Shot", lambda c: [["assets", "is", c.link("AE")]], {"S4"}),
]


# --------------------------------------------------------------------------------------------
# Cases on the seeded data (no exact expectation; invariants only)
# --------------------------------------------------------------------------------------------


def _all(pred, what):
    def check(rows):
        bad = [r for r in rows if not pred(r)]
        assert not bad, f"{what}: {bad[:3]}"
    return check


def _sorted_by(key, reverse=False):
    def check(rows):
        keys = [key(r) for r in rows]
        assert keys == sorted(keys, reverse=reverse), "rows not in requested order"
    return check


def _nonempty(rows):
    assert rows, "seeded data should contain matching rows"


S = lambda name, t, filters, fields=None, kwargs=None, check=None: ReadCase(  # noqa: E731
    name, t, filters, fields or ["id"], kwargs=kwargs or {}, scoped=False, check=check)

SEEDED_CASES: list[ReadCase] = [
    S("seed_projects", "Project", [], ["name", "sg_status", "archived"], check=_nonempty),
    S("seed_shots", "Shot", [], ["code", "sg_status_list", "sg_sequence", "project", "sg_cut_in"], check=_nonempty),
    S("seed_shots_by_status", "Shot", [["sg_status_list", "in", ["ip", "wtg"]]], ["sg_status_list"],
      check=_all(lambda r: r["sg_status_list"] in ("ip", "wtg"), "status outside filter")),
    S("seed_shots_with_sequence", "Shot", [["sg_sequence", "is_not", None]], ["sg_sequence", "sg_sequence.Sequence.code"],
      check=_all(lambda r: r["sg_sequence"] and r["sg_sequence"]["name"] == r["sg_sequence.Sequence.code"], "link name != deep code")),
    S("seed_shots_sorted_cut_in", "Shot", [["sg_cut_in", "is_not", None]], ["sg_cut_in"],
      kwargs={"order": [{"field_name": "sg_cut_in", "direction": "desc"}, {"field_name": "id", "direction": "asc"}]},
      check=_sorted_by(lambda r: (-r["sg_cut_in"], r["id"]))),
    S("seed_assets", "Asset", [], ["code", "sg_asset_type", "tag_list", "shots"], check=_nonempty),
    S("seed_assets_retired", "Asset", [], ["code"], kwargs={"retired_only": True}),
    S("seed_shots_retired", "Shot", [], ["code"], kwargs={"retired_only": True}),
    S("seed_tasks", "Task", [], ["content", "entity", "due_date", "sg_status_list", "task_assignees"], check=_nonempty),
    S("seed_tasks_on_shots", "Task", [["entity", "type_is", "Shot"]], ["entity"],
      check=_all(lambda r: r["entity"]["type"] == "Shot", "non-Shot entity")),
    S("seed_tasks_deep", "Task", [["entity.Shot.sg_status_list", "is", "ip"]], ["entity", "entity.Shot.sg_status_list"],
      check=_all(lambda r: r["entity.Shot.sg_status_list"] == "ip", "deep value outside filter")),
    S("seed_versions", "Version", [], ["code", "entity", "sg_task", "entity.Shot.code", "created_at"], check=_nonempty),
    S("seed_versions_by_created", "Version", [], ["created_at"],
      kwargs={"order": [{"field_name": "created_at", "direction": "asc"}, {"field_name": "id", "direction": "asc"}]},
      check=_sorted_by(lambda r: (r["created_at"], r["id"]))),
    S("seed_notes", "Note", [], ["subject", "content", "note_links", "addressings_to", "user"], check=_nonempty),
    S("seed_users", "HumanUser", [], ["name", "login", "sg_status_list", "email"], check=_nonempty),
    S("seed_sequences", "Sequence", [], ["code", "shots"], check=_nonempty),
    S("seed_default_order", "Shot", [], ["id"], check=_sorted_by(lambda r: r["id"])),
    S("seed_text_contains", "Shot", [["code", "contains", "0"]], ["code"],
      check=_all(lambda r: "0" in (r["code"] or ""), "code without '0'")),
]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def resolve(case: ReadCase, ctx: Ctx | None) -> tuple[str, list, list, dict]:
    # Deep copies: the client rewrites sort dicts in place, and cases are shared module data.
    filters = copy.deepcopy(case.filters(ctx) if callable(case.filters) else case.filters)
    kwargs = copy.deepcopy(case.kwargs(ctx) if callable(case.kwargs) else case.kwargs)
    if case.scoped and ctx is not None:
        filters = ctx.scope(case.entity_type) + filters
    return case.entity_type, filters, list(case.fields), kwargs


def run_case(sg, case: ReadCase, ctx: Ctx | None) -> list[dict]:
    entity_type, filters, fields, kwargs = resolve(case, ctx)
    return sg.find(entity_type, filters, fields, **kwargs)


def _norm(value: Any) -> Any:
    """Comparable form of a returned value (links keep only type, id and name)."""
    if isinstance(value, dict) and "type" in value and "id" in value:
        return {k: value[k] for k in ("type", "id", "name") if k in value}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def check_case(case: ReadCase, ctx: Ctx, rows: list[dict]) -> None:
    """Assert ``rows`` meets the case's expectation."""
    names = ctx.names(rows)
    exp = case.expect
    if isinstance(exp, list):
        assert names == exp, f"{case.name}: got {names}, expected {exp} (in order)"
    elif isinstance(exp, set):
        assert len(names) == len(set(names)), f"{case.name}: duplicate rows {names}"
        assert set(names) == exp, f"{case.name}: got {sorted(names)}, expected {sorted(exp)}"
    elif isinstance(exp, Partial):
        missing = exp.include - set(names)
        unexpected = exp.exclude & set(names)
        assert not missing and not unexpected, (
            f"{case.name}: got {sorted(names)}; missing {sorted(missing)}, must not contain {sorted(unexpected)}")
    for row in rows:
        assert row["type"] == case.entity_type and isinstance(row["id"], int)
        for f in case.fields:
            assert f in row, f"{case.name}: requested field {f!r} missing from {row}"
    by_name = dict(zip(names, rows))
    for name, values in case.expect_values.items():
        assert name in by_name, f"{case.name}: {name} not returned"
        for f, v in values.items():
            want = v(ctx) if callable(v) else v
            got = by_name[name][f]
            assert _norm(got) == _norm(want), f"{case.name}: {name}.{f} = {got!r}, expected {want!r}"


def diff_targets(
    sg_a,
    sg_b,
    ctx: Ctx | None,
    cases: list[ReadCase] | None = None,
    after_case: Callable[[ReadCase], None] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Run every case through two clients (e.g. the site directly and through the proxy) and
    return ``(case name, rows_a, rows_b)`` for each case whose results differ. A case that
    raises on one side must raise on the other too (the exception text is compared).
    ``after_case`` is called once each case has run on both sides (the proxy test reads the
    proxy's metrics there to tell which case passed through and why)."""
    if cases is None:
        cases = (DATASET_CASES if ctx is not None else []) + SEEDED_CASES
    out = []
    for case in cases:
        results = []
        for sg in (sg_a, sg_b):
            try:
                results.append(run_case(sg, case, ctx))
            except Exception as exc:  # compare failures too
                results.append(f"{type(exc).__name__}: {exc}")
        if after_case is not None:
            after_case(case)
        if results[0] != results[1]:
            out.append((case.name, results[0], results[1]))
    return out
