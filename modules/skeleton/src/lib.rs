//! The skeleton of docs/authoring-modules.md §4.1 (the guide shows the code below this header).
// wit-bindgen's generated ABI glue is unsafe code and has undocumented public items: the
// workspace's lints (deny unsafe_code and missing_docs) make this their one exception here.
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({ world: "decider", path: "wit" });

use exports::vapgen::decider::decide::{
    Constraint, Guest, KindPlan, ModuleInfo, PlanError, Settings,
};

struct Module;

impl Guest for Module {
    fn describe() -> ModuleInfo {
        ModuleInfo {
            name: "my-module".into(),
            version: "0.1.0".into(),
            interface_version: "0.1.0".into(),
        }
    }
    fn plan_kind(
        _settings: Settings,
        _template: String,
        _constraints: Vec<Constraint>,
    ) -> Result<KindPlan, PlanError> {
        // Your decisions. Return Err(PlanError { .. }) rather than panic: a panic is a trap.
        Err(PlanError {
            message: "not written yet".into(),
        })
    }
}

export!(Module);
