// sqlx::migrate! embeds ./migrations; without this a new migration file
// would not rebuild the crate (sqlx's recommended build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
