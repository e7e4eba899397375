//! The receiver with its settlement order broken (the `accept-before-commit`
//! feature): a batch is accepted before it is stored, so a crash in between
//! loses it. It exists to show that the `lost` check of `apphost test` fails
//! when the order is wrong; no user build has it (`required-features`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    receiver::startup::main().await
}
