//! The orders by ID, with the order lists already computed from them: the
//! pages of one list query slice a list kept here instead of filtering and
//! sorting every order again. Every change to an order goes through
//! [`Orders::get_mut`] or [`Orders::insert`], which forget the lists.

use std::collections::{btree_map, BTreeMap, HashMap};
use std::ops::Index;
use std::sync::Arc;

use serde_json::Value;

/// Lists kept at most (a new one past this forgets the others).
const MAX_CACHED_LISTS: usize = 64;

/// The orders one list query selects, in list order.
#[derive(Debug)]
pub(super) struct OrderList {
    /// Their keys.
    pub(super) keys: Vec<String>,
    /// True when every one's `ID` is a text.
    pub(super) text_ids: bool,
}

/// Orders keyed by ID.
#[derive(Debug, Default)]
pub(super) struct Orders {
    map: BTreeMap<String, Value>,
    /// Per list query (canonical text, without its page): the keys of the
    /// matching orders in list order.
    lists: HashMap<String, Arc<OrderList>>,
}

impl Orders {
    pub(super) fn get(&self, id: &str) -> Option<&Value> {
        self.map.get(id)
    }

    /// The order, to change: the kept lists are forgotten.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.lists.clear();
        self.map.get_mut(id)
    }

    /// Adds or replaces an order: the kept lists are forgotten.
    pub(super) fn insert(&mut self, id: String, order: Value) {
        self.lists.clear();
        self.map.insert(id, order);
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn values(&self) -> btree_map::Values<'_, String, Value> {
        self.map.values()
    }

    pub(super) fn iter(&self) -> btree_map::Iter<'_, String, Value> {
        self.map.iter()
    }

    /// The list kept for `key`, if any.
    pub(super) fn cached_list(&self, key: &str) -> Option<Arc<OrderList>> {
        self.lists.get(key).cloned()
    }

    /// Keeps `list` for `key` (valid until the next change to an order).
    pub(super) fn keep_list(&mut self, key: String, list: Arc<OrderList>) {
        if self.lists.len() >= MAX_CACHED_LISTS {
            self.lists.clear();
        }
        self.lists.insert(key, list);
    }
}

impl Index<&String> for Orders {
    type Output = Value;

    fn index(&self, id: &String) -> &Value {
        &self.map[id]
    }
}
