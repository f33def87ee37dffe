//! `vigil rules check` and `vigil rules test`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use vigil::rules::cases::{case_files, run_cases};
use vigil::rules::{RuleHost, RulesetSource};

use crate::Failure;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile and lint a ruleset; exit 1 with file:line errors.
    Check { dir: PathBuf },
    /// Run the ruleset's test cases (DIR/tests/*.yaml).
    Test {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

pub fn run(command: RulesCommand) -> Result<(), Failure> {
    match command {
        RulesCommand::Check { dir } => check(&dir),
        RulesCommand::Test { dir, format } => test(&dir, format),
    }
}

fn check(dir: &Path) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::Input(format!("`{}` is not a folder", dir.display())));
    }
    let source = RulesetSource::load(dir).map_err(|e| Failure::Check(e.to_string()))?;
    let host = RuleHost::compile(source).map_err(|e| Failure::Check(e.to_string()))?;
    println!("{}: {} rules ok, version {}", dir.display(), host.metas().count(), host.version());
    Ok(())
}

fn test(dir: &Path, format: Format) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::Input(format!("`{}` is not a folder", dir.display())));
    }
    let source = RulesetSource::load(dir).map_err(|e| Failure::Check(e.to_string()))?;
    let files = case_files(dir);
    if files.is_empty() {
        return Err(Failure::Input(format!("no test cases in `{}`", dir.join("tests").display())));
    }
    let results = run_cases(&source, &files).map_err(|errors| {
        Failure::Input(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    })?;
    let failed = results.iter().filter(|r| !r.passed).count();
    match format {
        Format::Json => {
            let report = serde_json::json!({"passed": results.len() - failed, "failed": failed, "cases": results});
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        Format::Text => {
            let mut file = "";
            for r in &results {
                if r.file != file {
                    file = &r.file;
                    println!("{file}:");
                }
                println!("  {} {}", if r.passed { "PASS" } else { "FAIL" }, r.name);
                for f in &r.failures {
                    println!("       {f}");
                }
            }
            println!("{} passed, {} failed", results.len() - failed, failed);
        }
    }
    if failed > 0 {
        Err(Failure::Check(String::new()))
    } else {
        Ok(())
    }
}
