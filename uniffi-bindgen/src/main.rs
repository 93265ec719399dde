//! `cargo run -p uniffi-bindgen -- generate --library target/debug/libmobile_ffi.so --language
//! python|kotlin|swift --out-dir DIR --no-format`: the bindings of `mobile-ffi`, generated from
//! the metadata the proc-macros embed in the compiled library.

fn main() {
    uniffi::uniffi_bindgen_main()
}
