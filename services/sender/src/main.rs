use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    sender::startup::main().await
}
