//! The `vapgen` command (see [`vapgen::app`]).

fn main() -> std::process::ExitCode {
    vapgen::app::main()
}
