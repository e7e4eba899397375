//! The receiver with its inbox check switched off (the `no-dedup` feature):
//! a redelivered message is applied again. It exists to show that the
//! duplicate-effect check of `apphost test` fails when deduplication is
//! broken; no user build has it (`required-features`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    receiver::startup::main().await
}
