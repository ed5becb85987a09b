//! The kept state in memory, compact: every application's [`Tracked`] in one vector sorted
//! by `<namespace>/<name>`, the names in one string. About 60 bytes per application
//! instead of ~150 in a `BTreeMap<String, Tracked>` (a small heap string per key and
//! half-full tree nodes), which is what a leader holds between cycles for every
//! application of a fleet.

use std::collections::BTreeMap;

use crate::observe::Tracked;

/// One application's slot: where its name lies in [`Apps::names`], and its state.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    at: u32,
    len: u32,
    tracked: Tracked,
}

/// The kept state of one server, by `<namespace>/<name>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Apps {
    names: String,
    slots: Vec<Slot>,
}

impl Apps {
    fn name(&self, slot: &Slot) -> &str {
        &self.names[slot.at as usize..(slot.at + slot.len) as usize]
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.slots.binary_search_by(|s| self.name(s).cmp(key))
    }

    /// Where `key` is, in name order (for a bitset of the applications seen in a cycle).
    pub fn position(&self, key: &str) -> Option<usize> {
        self.find(key).ok()
    }

    /// The state at `position`.
    pub fn at(&self, position: usize) -> Option<Tracked> {
        self.slots.get(position).map(|s| s.tracked)
    }

    /// The state of `key`, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Tracked> {
        let i = self.find(key).ok()?;
        Some(&mut self.slots[i].tracked)
    }

    /// Keeps the applications for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let names = &self.names;
        self.slots.retain(|s| keep(&names[s.at as usize..(s.at + s.len) as usize]));
    }

    /// Adds `name` in any order; [`Apps::sorted`] puts it in place.
    pub fn push(&mut self, name: &str, tracked: Tracked) {
        let at = self.names.len() as u32;
        self.names.push_str(name);
        self.slots.push(Slot { at, len: name.len() as u32, tracked });
    }

    /// Room for `slots` applications whose names take `names` bytes, so pushing that many
    /// never reallocates (and never holds two copies while it grows).
    pub fn with_capacity(slots: usize, names: usize) -> Self {
        Self { names: String::with_capacity(names), slots: Vec::with_capacity(slots) }
    }

    /// Sorted by name after [`Apps::push`]es; of a name pushed twice, the last stays. In
    /// place: no second vector, no merge-sort buffer.
    pub fn sorted(mut self) -> Self {
        let names = &self.names;
        let name = |s: &Slot| &names[s.at as usize..(s.at + s.len) as usize];
        // `at` grows with every push, so (name, at) orders pushes of one name.
        self.slots.sort_unstable_by(|a, b| name(a).cmp(name(b)).then(a.at.cmp(&b.at)));
        // `dedup_by` keeps the first of a run; make it the last pushed.
        self.slots.dedup_by(|later, first| {
            if name(later) == name(first) {
                *first = *later;
                true
            } else {
                false
            }
        });
        self
    }

    /// Sets every application of `set` (sorted) and forgets those of `forget`. Existing
    /// ones are written in place; when any is new or forgotten the vector and the names
    /// are rebuilt once, and an empty state simply takes `set` (a first cycle copies
    /// nothing).
    pub fn merge(&mut self, set: Apps, forget: &[String]) {
        if self.slots.is_empty() && forget.is_empty() {
            *self = set;
            return;
        }
        let mut reshaped = forget.iter().any(|k| self.find(k).is_ok());
        for (key, t) in set.iter() {
            match self.find(key) {
                Ok(i) => self.slots[i].tracked = *t,
                Err(_) => reshaped = true,
            }
        }
        if !reshaped {
            return;
        }
        let mut forget: Vec<&str> = forget.iter().map(String::as_str).collect();
        forget.sort_unstable();
        let mut next = Builder::with_capacity(self.slots.len() + set.len(), self.names.len() + set.names.len());
        let mut new = set.iter().peekable();
        for slot in &self.slots {
            let name = self.name(slot);
            while let Some((key, t)) = new.next_if(|(k, _)| *k < name) {
                next.push(key, *t);
            }
            match new.next_if(|(k, _)| *k == name) {
                Some((_, t)) => next.push(name, *t),
                None if forget.binary_search(&name).is_ok() => {}
                None => next.push(name, slot.tracked),
            }
        }
        for (key, t) in new {
            next.push(key, *t);
        }
        *self = next.finish();
    }

    /// The state of `key`.
    pub fn get(&self, key: &str) -> Option<Tracked> {
        self.find(key).ok().map(|i| self.slots[i].tracked)
    }

    /// Applications kept.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every application, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tracked)> {
        self.slots.iter().map(|s| (self.name(s), &s.tracked))
    }

    /// Applies `updates` (`None` forgets an application; of a key given twice, the last).
    pub fn apply(&mut self, updates: &[(String, Option<Tracked>)]) {
        let mut set = Apps::default();
        let mut forget = Vec::new();
        let mut last: BTreeMap<&str, Option<Tracked>> = BTreeMap::new();
        for (k, t) in updates {
            last.insert(k, *t);
        }
        for (k, t) in last {
            match t {
                Some(t) => set.push(k, t),
                None => forget.push(k.to_owned()),
            }
        }
        self.merge(set, &forget);
    }
}

/// A cycle's changes to the kept state: the applications whose state is set, and those
/// forgotten. Held as compactly as the state itself: on a first cycle `set` becomes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Updates {
    /// New or changed states (sorted once the cycle is planned).
    pub set: Apps,
    /// Applications to forget.
    pub forget: Vec<String>,
}

impl Updates {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.forget.is_empty()
    }

    /// Every key touched.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|(k, _)| k).chain(self.forget.iter().map(String::as_str))
    }

    /// As `(key, state)` pairs, `None` for a forgotten one, sorted by key.
    pub fn pairs(&self) -> Vec<(String, Option<Tracked>)> {
        let mut all: Vec<(String, Option<Tracked>)> = self
            .set
            .iter()
            .map(|(k, t)| (k.to_owned(), Some(*t)))
            .chain(self.forget.iter().map(|k| (k.clone(), None)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Builds [`Apps`] from names in ascending order.
struct Builder(Apps);

impl Builder {
    fn with_capacity(slots: usize, names: usize) -> Self {
        Self(Apps { names: String::with_capacity(names), slots: Vec::with_capacity(slots) })
    }

    fn push(&mut self, name: &str, tracked: Tracked) {
        let at = self.0.names.len() as u32;
        self.0.names.push_str(name);
        self.0.slots.push(Slot { at, len: name.len() as u32, tracked });
    }

    fn finish(mut self) -> Apps {
        self.0.names.shrink_to_fit();
        self.0.slots.shrink_to_fit();
        self.0
    }
}

impl FromIterator<(String, Tracked)> for Apps {
    fn from_iter<I: IntoIterator<Item = (String, Tracked)>>(iter: I) -> Self {
        let mut all: Vec<(String, Tracked)> = iter.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.dedup_by(|a, b| a.0 == b.0);
        let names = all.iter().map(|(k, _)| k.len()).sum();
        let mut b = Builder::with_capacity(all.len(), names);
        for (k, t) in &all {
            b.push(k, *t);
        }
        b.finish()
    }
}

impl From<&BTreeMap<String, Tracked>> for Apps {
    fn from(map: &BTreeMap<String, Tracked>) -> Self {
        let mut b = Builder::with_capacity(map.len(), map.keys().map(String::len).sum());
        for (k, t) in map {
            b.push(k, *t);
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(changes: u32) -> Tracked {
        Tracked { changes, ..Tracked::default() }
    }

    proptest! {
        /// Any sequence of updates leaves what a `BTreeMap` would hold.
        #[test]
        fn applies_like_a_map(rounds in proptest::collection::vec(
            proptest::collection::vec((0u8..40, proptest::option::of(0u32..5)), 0..30), 1..6)) {
            let mut map: BTreeMap<String, Tracked> = BTreeMap::new();
            let mut apps = Apps::default();
            for round in rounds {
                let updates: Vec<(String, Option<Tracked>)> =
                    round.into_iter().map(|(k, v)| (format!("argocd/app-{k:02}"), v.map(t))).collect();
                for (k, v) in &updates {
                    match v {
                        Some(v) => map.insert(k.clone(), *v),
                        None => map.remove(k),
                    };
                }
                apps.apply(&updates);
                prop_assert_eq!(apps.len(), map.len());
                let listed: Vec<(String, Tracked)> = apps.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
                let expected: Vec<(String, Tracked)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(listed, expected);
                for k in map.keys() {
                    prop_assert_eq!(apps.get(k), map.get(k).copied());
                }
                prop_assert_eq!(&Apps::from(&map), &apps);
            }
        }
    }

    #[test]
    fn a_slot_is_small() {
        assert!(std::mem::size_of::<Slot>() <= 56, "{}", std::mem::size_of::<Slot>());
    }
}
