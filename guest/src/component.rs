//! The bundled module's export (feature `component`, wasm32 only): the shared adapter of
//! [`crate::export_decider!`] around this crate's [`crate::plan_kind`] and [`crate::describe`].

crate::export_decider!(plan: crate::plan_kind, describe: crate::describe, wit: "../wit");
