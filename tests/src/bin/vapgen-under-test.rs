//! `vapgen` itself, as a binary target of the test crate: its cluster tests start real
//! `vapgen` processes (failover, hot swap) through `CARGO_BIN_EXE_vapgen-under-test`, which
//! cargo provides only for binaries of the same package.

fn main() -> std::process::ExitCode {
    vapgen::app::main()
}
