use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = apphost::cli::Cli::parse();
    match apphost::cli::run(args) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
