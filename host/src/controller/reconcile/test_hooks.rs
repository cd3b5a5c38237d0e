//! Test hook: make the next reconcile of one constraint panic, so that cluster tests can
//! check that a panic is contained to its key (`tests/tests/controller.rs`). Nothing sets it
//! outside tests; the check is one uncontended lock per constraint reconcile.

use std::sync::Mutex;

static PANIC_ONCE: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// The next reconcile of constraint `kind/name` panics.
pub fn panic_once(kind: &str, name: &str) {
    PANIC_ONCE
        .lock()
        .expect("test hook")
        .push((kind.into(), name.into()));
}

pub(super) fn maybe_panic(kind: &str, name: &str) {
    let hit = {
        let mut v = PANIC_ONCE.lock().expect("test hook");
        match v.iter().position(|(k, n)| k == kind && n == name) {
            Some(i) => {
                v.remove(i);
                true
            }
            None => false,
        }
    };
    if hit {
        panic!("test hook: injected panic in the reconcile of {kind}/{name}");
    }
}
