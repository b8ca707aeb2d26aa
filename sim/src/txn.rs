//! All-or-nothing writes: every change to the store goes through a `Txn` that keeps an undo
//! log, so a failing batch sub-request rolls back rows and events alike.

use crate::store::{Pending, Row, Store};
use crate::value::{Link, Ty, Val};

enum Undo {
    Row { link: Link, prev: Option<Row> },
    Pending { ty: Ty, id: u32 },
}

pub struct Txn<'a> {
    pub store: &'a mut Store,
    undo: Vec<Undo>,
}

impl<'a> Txn<'a> {
    pub fn new(store: &'a mut Store) -> Txn<'a> {
        Txn {
            store,
            undo: Vec::new(),
        }
    }

    pub fn insert(&mut self, ty: Ty, row: Row) -> u32 {
        let id = self.store.insert(ty, row);
        self.undo.push(Undo::Row {
            link: Link { ty, id },
            prev: None,
        });
        id
    }

    /// A mutable row, remembering its previous state.
    pub fn row_mut(&mut self, link: Link) -> Option<&mut Row> {
        let prev = self.store.row(link)?.clone();
        self.undo.push(Undo::Row {
            link,
            prev: Some(prev),
        });
        self.store.table_mut(link.ty).row_mut(link.id)
    }

    pub fn set(&mut self, link: Link, field: u16, val: Option<Val>) {
        if let Some(row) = self.row_mut(link) {
            row.set(field, val);
        }
    }

    pub fn hold_back(&mut self, ty: Ty, id: u32, pending: Pending) {
        self.store.table_mut(ty).pending.insert(id, pending);
        self.undo.push(Undo::Pending { ty, id });
    }

    pub fn rollback(mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Row { link, prev } => {
                    let table = self.store.table_mut(link.ty);
                    if let Some(slot) = table.rows.get_mut(link.id as usize - 1) {
                        *slot = prev;
                    }
                    while table.rows.last().is_some_and(Option::is_none) {
                        table.rows.pop();
                    }
                }
                Undo::Pending { ty, id } => {
                    self.store.table_mut(ty).pending.remove(&id);
                }
            }
        }
    }

    pub fn commit(self) {}
}
