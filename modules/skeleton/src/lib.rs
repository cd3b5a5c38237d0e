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
