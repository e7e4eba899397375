use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    receiver::startup::main().await
}
