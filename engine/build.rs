//! Embeds the shipped ruleset (`../rules`) so `vigil demo` needs no files.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".rhai"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut code = String::from("/// The shipped rules: (file name, text).\npub const SHIPPED_RULES: &[(&str, &str)] = &[\n");
    for name in &names {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(code, "    ({name:?}, include_str!({:?})),", path.display().to_string());
    }
    code.push_str("];\n");
    let config = dir.join("ruleset.toml");
    println!("cargo:rerun-if-changed={}", config.display());
    let _ = writeln!(code, "/// The shipped `ruleset.toml`.\npub const SHIPPED_CONFIG: &str = include_str!({:?});", config.display().to_string());
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("shipped_rules.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo:warning=cannot write {}: {e}", out.display());
    }
}
