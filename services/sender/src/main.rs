use std::process::ExitCode;

use service_defaults::{config::ProcessEnv, http::Invocation};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match Invocation::from_args("sender") {
        Ok(Invocation::Serve) => serve(),
        // No runtime: a container healthcheck runs this every few seconds.
        Ok(Invocation::HealthCheck) => service_defaults::http::health_check(&ProcessEnv, sender::DEFAULT_PORT),
        Err(code) => code,
    }
}

#[tokio::main]
async fn serve() -> ExitCode {
    sender::startup::main().await
}
