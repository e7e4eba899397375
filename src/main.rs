use std::process::ExitCode;

use clap::Parser;

/// jemalloc, for memory that stays flat over days (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (`_RJEM_MALLOC_CONF` in the environment still wins):
/// freed pages go back to the system within a second, by a background
/// thread rather than whenever apphost next allocates. The first `up`'s
/// set-up images pass the databases' data folders through apphost (about
/// 120 MB for a few seconds); with jemalloc's defaults (10 s, and only on
/// allocator activity) the idle stack kept 51 MB resident afterwards, with
/// these 30 MB (docs/benchmarks.md, the dashboard's idle figures).
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

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
