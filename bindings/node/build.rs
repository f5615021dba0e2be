//! napi-rs link setup (Node's symbols are resolved at load time).
fn main() {
    napi_build::setup();
}
