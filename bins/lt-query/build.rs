//! Records the official libduckdb.so directory (DUCKDB_LIB_DIR, from scripts/setup.sh) as rpath
//! of the `lt-query` binary and its tests.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
