//! The `nats-insights` binary: parses the command line and starts the command.

fn main() -> std::process::ExitCode {
    nats_insights::cli::main()
}
