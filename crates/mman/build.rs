//! One cfg alias for the platform choice made all over the crate: `linux_like` is Linux or
//! Android, the full target (instead of `any(target_os = "linux", target_os = "android")`
//! written out at every use).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(linux_like)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo::rustc-cfg=linux_like");
    }
}
