//! Generates `bindings/csharp/src/NativeMethods.g.cs` (the P/Invoke layer) from the `extern "C"`
//! functions in `src/ffi.rs`. The file is generated on every build and git-ignored: never edit it.
fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    // The manifest directory of THIS build, read at run time: `env!` would bake in the directory
    // the build script was compiled in, and with a target directory shared between clones a
    // build in one clone would then write the file into another.
    let Ok(manifest_dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        println!("cargo:warning=CARGO_MANIFEST_DIR is not set");
        std::process::exit(1);
    };
    let out = std::path::Path::new(&manifest_dir).join("../src/NativeMethods.g.cs");
    let result = csbindgen::Builder::default()
        .input_extern_file("src/ffi.rs")
        .csharp_dll_name("langtian_cs")
        .csharp_namespace("Langtian.Native")
        .csharp_class_name("NativeMethods")
        .csharp_class_accessibility("internal")
        // Mono's mcs speaks C# 7.2: delegates instead of `delegate* unmanaged`, IntPtr/UIntPtr
        // instead of nint/nuint (both C# 9).
        .csharp_use_function_pointer(false)
        .csharp_use_nint_types(false)
        .generate_csharp_file(&out);
    if let Err(e) = result {
        println!("cargo:warning=csbindgen could not write {}: {e}", out.display());
        std::process::exit(1);
    }
}
