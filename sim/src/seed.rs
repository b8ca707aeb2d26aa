//! Deterministic seed data (fixed RNG seed): projects, users, steps, sequences, shots,
//! assets, tasks, versions, published files and notes, with nulls, unicode, multi-entity
//! links (both sides kept consistent) and some retired rows. Counts: see `SeedCounts`.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::{ScriptCredential, UserCredential};
use crate::inverse::partner_for;
use crate::store::{Row, Store};
use crate::value::{parse_date_time, Link, Ty, Val};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// N: shots ≈ N, assets ≈ N/2, tasks ≈ 2N, versions ≈ N (see `SeedCounts::for_config`).
    pub scale: usize,
    pub rng_seed: u64,
    /// Per-type overrides (e.g. a million shots for the scanner benchmark).
    pub shots: Option<usize>,
    pub assets: Option<usize>,
    pub tasks: Option<usize>,
    pub versions: Option<usize>,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            scale: 100,
            rng_seed: 42,
            shots: None,
            assets: None,
            tasks: None,
            versions: None,
        }
    }
}

/// How many rows of each type the seed creates (before configured users/scripts).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedCounts {
    pub projects: usize,
    pub users: usize,
    pub steps: usize,
    pub sequences: usize,
    pub shots: usize,
    pub assets: usize,
    pub tasks: usize,
    pub versions: usize,
    pub published_files: usize,
    pub notes: usize,
}

impl SeedCounts {
    pub fn for_config(c: &SeedConfig) -> SeedCounts {
        let n = c.scale;
        let shots = c.shots.unwrap_or(n);
        SeedCounts {
            projects: 3 + (n / 1000).min(17),
            users: 10 + (n / 50).min(490),
            steps: STEPS.len(),
            sequences: (shots / 10).clamp(3, 1000),
            shots,
            assets: c.assets.unwrap_or(n / 2),
            tasks: c.tasks.unwrap_or(2 * n),
            versions: c.versions.unwrap_or(n),
            published_files: n / 2,
            notes: (n / 5).max(1),
        }
    }
}

const STEPS: &[(&str, &str)] = &[
    ("Layout", "Shot"),
    ("Animation", "Shot"),
    ("Lighting", "Shot"),
    ("Comp", "Shot"),
    ("FX", "Shot"),
    ("Model", "Asset"),
    ("Rig", "Asset"),
    ("Surface", "Asset"),
];

const WORDS: &[&str] = &[
    "hero",
    "crowd",
    "night",
    "rain",
    "fx",
    "wide",
    "close-up",
    "dolly",
    "séquence",
    "plan",
    "镜头",
    "カット",
    "Übergang",
    "naïve",
    "forest",
    "city",
    "ocean",
    "✨ sparkle",
    "smoke",
];

const FIRST: &[&str] = &[
    "Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Femi", "Giulia", "Håkon",
];
const LAST: &[&str] = &[
    "Silva", "Ng", "Dubois", "Ivanov", "Kim", "Adeyemi", "Rossi", "Berg",
];

/// Builds rows of one type from field names resolved once.
struct Maker {
    ty: Ty,
    idx: Vec<Option<u16>>,
}

impl Maker {
    fn row(&self, vals: Vec<Option<Val>>) -> Row {
        let mut v: Vec<(u16, Val)> = self
            .idx
            .iter()
            .zip(vals)
            .filter_map(|(i, v)| Some(((*i)?, v?)))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        Row {
            retired: false,
            vals: v,
        }
    }
}

pub struct Seeded {
    pub counts: SeedCounts,
    pub scripts: Vec<(ScriptCredential, Link)>,
    pub users: Vec<(UserCredential, Link)>,
}

struct Seeder<'a> {
    store: &'a mut Store,
    rng: StdRng,
    base: i64,
}

impl Seeder<'_> {
    fn maker(&self, ty: &str, names: &[&str]) -> Option<Maker> {
        let ty = *self.store.by_name.get(ty)?;
        let t = self.store.table(ty);
        Some(Maker {
            ty,
            idx: names.iter().map(|n| t.field(n)).collect(),
        })
    }

    fn pick<'s>(&mut self, items: &'s [&'s str]) -> &'s str {
        items[self.rng.random_range(0..items.len())]
    }

    fn status(&mut self, ty: &str, field: &str) -> Option<Val> {
        let ty = *self.store.by_name.get(ty)?;
        let t = self.store.table(ty);
        let vals = &t.fields[t.field(field)? as usize].valid_values;
        if vals.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..vals.len());
        Some(Val::str(&vals[i]))
    }

    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| self.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn when(&mut self) -> i64 {
        self.base - self.rng.random_range(0..400 * 86_400)
    }

    fn insert(&mut self, m: &Maker, vals: Vec<Option<Val>>, retired: bool) -> Link {
        let mut row = m.row(vals);
        row.retired = retired;
        Link {
            ty: m.ty,
            id: self.store.insert(m.ty, row),
        }
    }
}

fn s(v: impl Into<String>) -> Option<Val> {
    Some(Val::Str(v.into().into()))
}

fn l(link: Link) -> Option<Val> {
    Some(Val::Link(link))
}

fn multi(links: Vec<Link>) -> Option<Val> {
    (!links.is_empty()).then(|| Val::Multi(links.into()))
}

/// Fills an empty store.
pub fn seed(
    store: &mut Store,
    config: &SeedConfig,
    scripts: &[ScriptCredential],
    users: &[UserCredential],
) -> Seeded {
    let counts = SeedCounts::for_config(config);
    let mut sd = Seeder {
        store,
        rng: StdRng::seed_from_u64(config.rng_seed),
        base: parse_date_time("2025-01-01T00:00:00Z").unwrap_or(0),
    };
    let script_links = seed_scripts(&mut sd, scripts);
    let (user_links, people) = seed_users(&mut sd, users, counts.users);
    let projects = seed_projects(&mut sd, counts.projects, &people);
    let steps = seed_steps(&mut sd);
    let ctx = Ctx {
        projects,
        people,
        steps,
    };
    let seqs = seed_sequences(&mut sd, &ctx, counts.sequences);
    let shots = seed_shots(&mut sd, &ctx, &seqs, counts.shots);
    let assets = seed_assets(&mut sd, &ctx, counts.assets);
    link_shot_assets(&mut sd, &shots, &assets);
    let tasks = seed_tasks(&mut sd, &ctx, &shots, &assets, counts.tasks);
    let versions = seed_versions(&mut sd, &ctx, &shots, &tasks, counts.versions);
    seed_published_files(
        &mut sd,
        &ctx,
        &shots,
        &tasks,
        &versions,
        counts.published_files,
    );
    seed_notes(&mut sd, &ctx, &shots, &assets, counts.notes);
    for (t, f) in [
        ("Shot", "sg_sequence"),
        ("Task", "entity"),
        ("Shot", "assets"),
        ("Note", "note_links"),
    ] {
        rebuild_inverse(sd.store, t, f);
    }
    // Linking grew some rows' vectors by doubling; give the slack back.
    for table in &mut sd.store.tables {
        for row in table.rows.iter_mut().flatten() {
            row.vals.shrink_to_fit();
        }
    }
    Seeded {
        counts,
        scripts: script_links,
        users: user_links,
    }
}

struct Ctx {
    projects: Vec<Link>,
    people: Vec<Link>,
    steps: Vec<(Link, &'static str)>,
}

impl Ctx {
    fn person(&self, rng: &mut StdRng) -> Option<Val> {
        (!self.people.is_empty())
            .then(|| Val::Link(self.people[rng.random_range(0..self.people.len())]))
    }
    fn project(&self, i: usize) -> Option<Val> {
        (!self.projects.is_empty()).then(|| Val::Link(self.projects[i % self.projects.len()]))
    }
}

fn seed_scripts(sd: &mut Seeder, scripts: &[ScriptCredential]) -> Vec<(ScriptCredential, Link)> {
    let Some(m) = sd.maker(
        "ApiUser",
        &["firstname", "generate_event_log_entries", "description"],
    ) else {
        return Vec::new();
    };
    scripts
        .iter()
        .map(|c| {
            let vals = vec![
                s(&c.script_name),
                Some(Val::Bool(c.events)),
                s("test script"),
            ];
            (c.clone(), sd.insert(&m, vals, false))
        })
        .collect()
}

fn seed_users(
    sd: &mut Seeder,
    users: &[UserCredential],
    n: usize,
) -> (Vec<(UserCredential, Link)>, Vec<Link>) {
    let Some(m) = sd.maker(
        "HumanUser",
        &[
            "login",
            "name",
            "firstname",
            "lastname",
            "email",
            "sg_status_list",
        ],
    ) else {
        return (Vec::new(), Vec::new());
    };
    let mut configured = Vec::new();
    let mut people = Vec::new();
    for u in users {
        let name = u.name.clone().unwrap_or_else(|| u.login.clone());
        let vals = vec![
            s(&u.login),
            s(&name),
            s(&name),
            None,
            s(format!("{}@example.com", u.login)),
            s("act"),
        ];
        let link = sd.insert(&m, vals, false);
        configured.push((u.clone(), link));
        people.push(link);
    }
    for i in 0..n {
        let (f, la) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
        let login = format!("user{:03}", i + 1);
        let vals = vec![
            s(&login),
            s(format!("{f} {la}")),
            s(f),
            s(la),
            s(format!("{login}@example.com")),
            s("act"),
        ];
        // The last generated user is retired: links to it vanish from reads.
        let link = sd.insert(&m, vals, i + 1 == n);
        if i + 1 < n {
            people.push(link);
        }
    }
    (configured, people)
}

fn seed_projects(sd: &mut Seeder, n: usize, people: &[Link]) -> Vec<Link> {
    let Some(m) = sd.maker(
        "Project",
        &[
            "name",
            "sg_status",
            "archived",
            "sg_description",
            "users",
            "start_date",
            "tank_name",
        ],
    ) else {
        return Vec::new();
    };
    let names = ["Demo Project", "Big Buck Bunny", "Archived Show"];
    let mut out = Vec::new();
    for i in 0..n {
        let name = names
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("Show {:02}", i + 1));
        let archived = i == 2;
        let members: Vec<Link> = people.iter().skip(i % 3).step_by(3).copied().collect();
        let vals = vec![
            s(&name),
            None,
            Some(Val::Bool(archived)),
            s(format!("{name} — {}", sd.words(3))),
            multi(members),
            Some(Val::Date(
                crate::value::parse_date("2024-01-08").unwrap_or(0) + i as i32 * 30,
            )),
            s(name.to_lowercase().replace(' ', "_")),
        ];
        let link = sd.insert(&m, vals, false);
        // Archived projects get few rows: only every third row lands there (index 2).
        out.push(link);
    }
    out
}

fn seed_steps(sd: &mut Seeder) -> Vec<(Link, &'static str)> {
    let Some(m) = sd.maker(
        "Step",
        &["code", "short_name", "entity_type", "list_order", "color"],
    ) else {
        return Vec::new();
    };
    STEPS
        .iter()
        .enumerate()
        .map(|(i, (code, et))| {
            let vals = vec![
                s(*code),
                s(&code[..3.min(code.len())]),
                s(*et),
                Some(Val::Int(i as i64 + 1)),
                s("50,149,253"),
            ];
            (sd.insert(&m, vals, false), *et)
        })
        .collect()
}

fn stamps(sd: &mut Seeder, ctx: &Ctx) -> [Option<Val>; 4] {
    let created = sd.when();
    let updated = created + sd.rng.random_range(0..30 * 86_400);
    [
        Some(Val::DateTime(created)),
        Some(Val::DateTime(updated)),
        ctx.person(&mut sd.rng),
        ctx.person(&mut sd.rng),
    ]
}

const STAMP_FIELDS: [&str; 4] = ["created_at", "updated_at", "created_by", "updated_by"];

fn with_stamps<'a>(names: &[&'a str]) -> Vec<&'a str> {
    names.iter().copied().chain(STAMP_FIELDS).collect()
}

fn seed_sequences(sd: &mut Seeder, ctx: &Ctx, n: usize) -> Vec<Link> {
    let Some(m) = sd.maker(
        "Sequence",
        &with_stamps(&["code", "project", "sg_status_list", "description"]),
    ) else {
        return Vec::new();
    };
    (0..n)
        .map(|i| {
            let mut vals = vec![
                s(format!("sq{:03}", i + 1)),
                ctx.project(i),
                sd.status("Sequence", "sg_status_list"),
                s(sd.words(4)),
            ];
            vals.extend(stamps(sd, ctx));
            sd.insert(&m, vals, false)
        })
        .collect()
}

fn seed_shots(sd: &mut Seeder, ctx: &Ctx, seqs: &[Link], n: usize) -> Vec<Link> {
    let names = with_stamps(&[
        "code",
        "project",
        "sg_sequence",
        "sg_status_list",
        "description",
        "sg_cut_in",
        "sg_cut_out",
        "sg_cut_duration",
        "sg_shot_type",
        "tag_list",
        "sg_cut_order",
    ]);
    let Some(m) = sd.maker("Shot", &names) else {
        return Vec::new();
    };
    let np = ctx.projects.len().max(1);
    (1..=n)
        .map(|id| {
            let p = id % np;
            // A sequence of the shot's own project (sequence j belongs to project j % np).
            let per_project = (seqs.len() / np).max(1);
            let seq = seqs.get(p + np * ((id / np) % per_project)).copied();
            let cut_in = 1001 + sd.rng.random_range(0..48);
            let cut_out = cut_in + sd.rng.random_range(8..240);
            let tags = match id % 5 {
                0 => Some(Val::Tags(vec!["hero".into()].into())),
                1 => Some(Val::Tags(vec!["fx".into(), "night".into()].into())),
                _ => None,
            };
            let mut vals = vec![
                s(format!("sh{id:06}")),
                ctx.project(p),
                if id % 13 == 0 { None } else { seq.and_then(l) },
                sd.status("Shot", "sg_status_list"),
                if id % 7 == 0 {
                    None
                } else {
                    s(format!("Shot {id}: {}", sd.words(5)))
                },
                if id % 11 == 0 {
                    None
                } else {
                    Some(Val::Int(cut_in))
                },
                Some(Val::Int(cut_out)),
                Some(Val::Int(cut_out - cut_in + 1)),
                sd.status("Shot", "sg_shot_type"),
                tags,
                Some(Val::Int(id as i64 * 10)),
            ];
            vals.extend(stamps(sd, ctx));
            sd.insert(&m, vals, id % 97 == 0)
        })
        .collect()
}

fn seed_assets(sd: &mut Seeder, ctx: &Ctx, n: usize) -> Vec<Link> {
    let names = with_stamps(&[
        "code",
        "project",
        "sg_asset_type",
        "sg_status_list",
        "description",
        "tag_list",
    ]);
    let Some(m) = sd.maker("Asset", &names) else {
        return Vec::new();
    };
    const KINDS: &[&str] = &["hero", "prop", "env", "veh", "fx"];
    (1..=n)
        .map(|id| {
            let kind = KINDS[id % KINDS.len()];
            let mut vals = vec![
                s(format!("{kind}_{id:05}")),
                ctx.project(id),
                sd.status("Asset", "sg_asset_type"),
                sd.status("Asset", "sg_status_list"),
                if id % 6 == 0 {
                    None
                } else {
                    s(format!("{kind} asset — {}", sd.words(3)))
                },
                (id % 4 == 0).then(|| Val::Tags(vec![kind.into()].into())),
            ];
            vals.extend(stamps(sd, ctx));
            sd.insert(&m, vals, id % 89 == 0)
        })
        .collect()
}

fn link_shot_assets(sd: &mut Seeder, shots: &[Link], assets: &[Link]) {
    let Some(&ty) = sd.store.by_name.get("Shot") else {
        return;
    };
    let Some(f) = sd.store.table(ty).field("assets") else {
        return;
    };
    if assets.is_empty() {
        return;
    }
    for shot in shots {
        let k = sd.rng.random_range(0..4);
        let mut links: Vec<Link> = (0..k)
            .map(|_| assets[sd.rng.random_range(0..assets.len())])
            .collect();
        links.dedup();
        if let Some(row) = sd.store.table_mut(ty).row_mut(shot.id) {
            row.set(f, multi(links));
        }
    }
}

fn seed_tasks(sd: &mut Seeder, ctx: &Ctx, shots: &[Link], assets: &[Link], n: usize) -> Vec<Link> {
    let names = with_stamps(&[
        "content",
        "entity",
        "step",
        "project",
        "sg_status_list",
        "start_date",
        "due_date",
        "task_assignees",
        "duration",
        "color",
    ]);
    let Some(m) = sd.maker("Task", &names) else {
        return Vec::new();
    };
    let shot_steps: Vec<_> = ctx.steps.iter().filter(|s| s.1 == "Shot").collect();
    let asset_steps: Vec<_> = ctx.steps.iter().filter(|s| s.1 == "Asset").collect();
    let base_day = (sd.base / 86_400) as i32;
    (1..=n)
        .map(|id| {
            let on_shot = id % 2 == 1 || assets.is_empty();
            let (pool, steps) = if on_shot {
                (shots, &shot_steps)
            } else {
                (assets, &asset_steps)
            };
            let entity = (!pool.is_empty()).then(|| pool[(id / 2) % pool.len()]);
            let step = (!steps.is_empty()).then(|| steps[(id / 2) % steps.len()]);
            let start = base_day - 200 + sd.rng.random_range(0..300);
            let assignees: Vec<Link> = (0..id % 3)
                .filter_map(|_| ctx.person(&mut sd.rng)?.as_link())
                .collect();
            let mut vals = vec![
                s(step
                    .map(|s| format!("{} {}", step_name(sd.store, s.0), id))
                    .unwrap_or_else(|| format!("task {id}"))),
                entity.and_then(l),
                step.and_then(|s| l(s.0)),
                ctx.project(entity.map(|e| e.id as usize).unwrap_or(id)),
                sd.status("Task", "sg_status_list"),
                (id % 9 != 0).then_some(Val::Date(start)),
                (id % 9 != 0).then_some(Val::Date(start + sd.rng.random_range(1..40))),
                multi(assignees),
                Some(Val::Int(sd.rng.random_range(60..4800))),
                s("pipeline_step"),
            ];
            vals.extend(stamps(sd, ctx));
            sd.insert(&m, vals, id % 101 == 0)
        })
        .collect()
}

fn step_name(store: &Store, step: Link) -> String {
    store.display_name(step).unwrap_or("Step").to_string()
}

fn seed_versions(
    sd: &mut Seeder,
    ctx: &Ctx,
    shots: &[Link],
    tasks: &[Link],
    n: usize,
) -> Vec<Link> {
    let names = with_stamps(&[
        "code",
        "entity",
        "sg_task",
        "project",
        "user",
        "sg_status_list",
        "description",
        "sg_first_frame",
        "sg_last_frame",
        "frame_count",
        "sg_path_to_movie",
    ]);
    let Some(m) = sd.maker("Version", &names) else {
        return Vec::new();
    };
    (1..=n)
        .map(|id| {
            let shot = (!shots.is_empty()).then(|| shots[id % shots.len()]);
            let task = (!tasks.is_empty()).then(|| tasks[(id * 2 + 1) % tasks.len()]);
            let code = shot
                .and_then(|s| sd.store.display_name(s).map(String::from))
                .unwrap_or_default();
            let first = 1001;
            let last = first + sd.rng.random_range(10..200);
            let mut vals = vec![
                s(format!("{code}_comp_v{:03}", id / shots.len().max(1) + 1)),
                shot.and_then(l),
                task.and_then(l),
                ctx.project(shot.map(|s| s.id as usize).unwrap_or(id)),
                ctx.person(&mut sd.rng),
                sd.status("Version", "sg_status_list"),
                (id % 5 != 0).then(|| Val::str(&sd.words(6))),
                Some(Val::Int(first)),
                Some(Val::Int(last)),
                Some(Val::Int(last - first + 1)),
                s(format!("/mnt/shows/{code}/comp/{code}_v{id:04}.mov")),
            ];
            vals.extend(stamps(sd, ctx));
            sd.insert(&m, vals, id % 103 == 0)
        })
        .collect()
}

fn seed_published_files(
    sd: &mut Seeder,
    ctx: &Ctx,
    shots: &[Link],
    tasks: &[Link],
    versions: &[Link],
    n: usize,
) {
    let names = with_stamps(&[
        "code",
        "entity",
        "task",
        "version",
        "project",
        "version_number",
        "path_cache",
        "description",
    ]);
    let Some(m) = sd.maker("PublishedFile", &names) else {
        return;
    };
    for id in 1..=n {
        let shot = (!shots.is_empty()).then(|| shots[id % shots.len()]);
        let code = shot
            .and_then(|s| sd.store.display_name(s).map(String::from))
            .unwrap_or_default();
        let mut vals = vec![
            s(format!("{code}_comp.v{id:03}.exr")),
            shot.and_then(l),
            (!tasks.is_empty()).then(|| Val::Link(tasks[(id * 2 + 1) % tasks.len()])),
            (!versions.is_empty()).then(|| Val::Link(versions[id % versions.len()])),
            ctx.project(shot.map(|s| s.id as usize).unwrap_or(id)),
            Some(Val::Int((id % 7) as i64 + 1)),
            s(format!("shows/{code}/comp/{code}_comp.v{id:03}.%04d.exr")),
            (id % 3 == 0).then(|| Val::str("published ✔")),
        ];
        vals.extend(stamps(sd, ctx));
        sd.insert(&m, vals, false);
    }
}

fn seed_notes(sd: &mut Seeder, ctx: &Ctx, shots: &[Link], assets: &[Link], n: usize) {
    let names = with_stamps(&[
        "subject",
        "content",
        "project",
        "note_links",
        "user",
        "addressings_to",
        "sg_status_list",
    ]);
    let Some(m) = sd.maker("Note", &names) else {
        return;
    };
    for id in 1..=n {
        let mut links = Vec::new();
        if !shots.is_empty() {
            links.push(shots[(id * 7) % shots.len()]);
        }
        if id % 2 == 0 && !assets.is_empty() {
            links.push(assets[(id * 3) % assets.len()]);
        }
        let to: Vec<Link> = ctx
            .person(&mut sd.rng)
            .and_then(|v| v.as_link())
            .into_iter()
            .collect();
        let mut vals = vec![
            s(format!("Note {id}: {}", sd.words(2))),
            s(format!("Please check: {} — «{}»", sd.words(5), sd.words(2))),
            ctx.project(links.first().map(|s| s.id as usize).unwrap_or(id)),
            multi(links),
            ctx.person(&mut sd.rng),
            multi(to),
            sd.status("Note", "sg_status_list"),
        ];
        vals.extend(stamps(sd, ctx));
        sd.insert(&m, vals, false);
    }
}

/// Writes the other side of every link of `ty.field` (seed writes one side only).
pub fn rebuild_inverse(store: &mut Store, ty: &str, field: &str) {
    let Some(&t) = store.by_name.get(ty) else {
        return;
    };
    let Some(f) = store.table(t).field(field) else {
        return;
    };
    let mut back: HashMap<(Link, u16), Vec<Link>> = HashMap::new();
    for (i, row) in store.table(t).rows.iter().enumerate() {
        let Some(row) = row else { continue };
        let src = Link {
            ty: t,
            id: i as u32 + 1,
        };
        for target in row.get(f).map(Val::links).unwrap_or(&[]) {
            if let Some(g) = partner_for(store, t, f, target.ty) {
                back.entry((*target, g)).or_default().push(src);
            }
        }
    }
    for ((target, g), links) in back {
        if let Some(row) = store.table_mut(target.ty).row_mut(target.id) {
            row.set(g, multi(links));
        }
    }
}
