//! Script, human-user and session authentication (doc section 2).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use rand::Rng;
use serde_json::{Map, Value};
use sgcache::api3::Api3Error;

use crate::config::{ScriptCredential, UserCredential};
use crate::store::Store;
use crate::value::{Link, Val};

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// `ApiUser` or `HumanUser` (the sudo target when sudoing).
    pub actor: Link,
    /// False for scripts whose "Generate Events" is off.
    pub events: bool,
    pub session_uuid: Option<String>,
}

/// The authenticated identity behind a session token.
#[derive(Clone, Debug)]
enum Base {
    Script(usize),
    User(usize),
}

pub struct Auth {
    /// Behind a lock: keys can be rotated while the site runs (`PUT /control/credentials`).
    scripts: RwLock<Vec<(ScriptCredential, Link)>>,
    users: Vec<(UserCredential, Link)>,
    sessions: Mutex<HashMap<String, Base>>,
}

fn fail() -> Api3Error {
    Api3Error::auth("Authentication failed: invalid credentials")
}

fn get<'a>(auth: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    auth.get(key).and_then(Value::as_str)
}

impl Auth {
    pub fn new(scripts: Vec<(ScriptCredential, Link)>, users: Vec<(UserCredential, Link)>) -> Auth {
        Auth {
            scripts: RwLock::new(scripts),
            users,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn base(&self, auth: &Map<String, Value>) -> Result<Base, Api3Error> {
        if let Some(name) = get(auth, "script_name") {
            let key = get(auth, "script_key").ok_or_else(fail)?;
            return self
                .scripts()
                .iter()
                .position(|(s, _)| s.script_name == name && s.script_key == key)
                .map(Base::Script)
                .ok_or_else(fail);
        }
        if let Some(login) = get(auth, "user_login") {
            let password = get(auth, "user_password").ok_or_else(fail)?;
            return self
                .users
                .iter()
                .position(|(u, _)| u.login == login && u.password == password)
                .map(Base::User)
                .ok_or_else(fail);
        }
        if let Some(token) = get(auth, "session_token") {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            return sessions.get(token).cloned().ok_or_else(|| {
                Api3Error::auth("Authentication failed: unknown or expired session token")
            });
        }
        Err(Api3Error::auth(
            "Authentication failed: no script_name, user_login or session_token given",
        ))
    }

    pub fn authenticate(
        &self,
        auth: &Map<String, Value>,
        store: &Store,
    ) -> Result<Principal, Api3Error> {
        let (actor, events) = match self.base(auth)? {
            Base::Script(i) => {
                let scripts = self.scripts();
                (scripts[i].1, scripts[i].0.events)
            }
            Base::User(i) => (self.users[i].1, true),
        };
        let actor = match get(auth, "sudo_as_login") {
            Some(login) => find_user(store, login).ok_or_else(|| {
                Api3Error::bad_request(format!(
                    "The user does not have permission to 'sudo': no active user with login '{login}'"
                ))
            })?,
            None => actor,
        };
        Ok(Principal {
            actor,
            events,
            session_uuid: get(auth, "session_uuid").map(str::to_string),
        })
    }

    fn scripts(&self) -> std::sync::RwLockReadGuard<'_, Vec<(ScriptCredential, Link)>> {
        self.scripts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Rotates a script's key (the old key is rejected from now on); false for an unknown
    /// script.
    pub fn set_script_key(&self, script_name: &str, script_key: &str) -> bool {
        let mut scripts = self.scripts.write().unwrap_or_else(|e| e.into_inner());
        match scripts
            .iter_mut()
            .find(|(s, _)| s.script_name == script_name)
        {
            Some((s, _)) => {
                s.script_key = script_key.to_string();
                true
            }
            None => false,
        }
    }

    /// `get_session_token`: a new token for the verified credentials.
    pub fn new_session(&self, auth: &Map<String, Value>) -> Result<String, Api3Error> {
        let base = self.base(auth)?;
        let token: String = {
            let mut rng = rand::rng();
            (0..32)
                .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(token.clone(), base);
        Ok(token)
    }
}

/// An active `HumanUser` by login.
pub fn find_user(store: &Store, login: &str) -> Option<Link> {
    let ty = *store.by_name.get("HumanUser")?;
    let table = store.table(ty);
    let field = table.field("login")?;
    table.rows.iter().enumerate().find_map(|(i, r)| {
        let r = r.as_ref()?;
        (!r.retired && r.get(field) == Some(&Val::str(login))).then_some(Link {
            ty,
            id: i as u32 + 1,
        })
    })
}
