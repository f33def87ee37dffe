//! `vigil`: the engine, its demo, rule tooling and replay.
//!
//! Exit codes: 0 success, 1 a failed check or test, 2 bad usage or input.

/// mimalloc rather than the system allocator: decoding and folding make
/// many small, short-lived allocations, and restoring state makes millions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config_cmd;
mod demo;
mod keys;
mod replay;
mod rules_cmd;
mod run;
mod topics;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Runtime governance for autonomous AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Logs on stderr as `human` text or `json` lines (also `VIGIL_LOG_FORMAT`);
    /// `RUST_LOG` directives choose what is logged.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a synthetic multi-agent workload with attacks through the shipped rules (no Kafka).
    Demo(demo::DemoArgs),
    /// Run the engine on a JSON Lines file (or stdin) or on Kafka.
    Run(run::RunArgs),
    /// Backtest a ruleset on recorded activity and diff its decisions against a baseline.
    Replay(replay::ReplayArgs),
    /// Compile, lint and test rulesets.
    Rules {
        #[command(subcommand)]
        command: rules_cmd::RulesCommand,
    },
    /// Make the signing key for control commands and sign commands with it.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Verify signed control commands (native JWS or CAEP SETs) against a JWK set.
    Verify(verify::VerifyArgs),
    /// Check a configuration file and print the effective configuration.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// Create the Kafka topics Vigil reads and writes.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
}

/// An error that maps to an exit code: 1 for a failed check, 2 for bad input.
#[derive(Debug)]
pub enum Failure {
    Check(String),
    Input(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Input(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format.or_else(|| std::env::var("VIGIL_LOG_FORMAT").ok()).as_deref() {
        None | Some("human") => logs.init(),
        Some("json") => logs.json().flatten_event(true).init(),
        Some(other) => {
            eprintln!("error: `--log-format {other}`: expected `human` or `json`");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Rules { command } => rules_cmd::run(command),
        Command::Topics { command } => topics::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Verify(args) => verify::run(args),
        Command::Config { command } => config_cmd::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Check(message)) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Input(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// `--rules DIR`, or the embedded shipped ruleset when absent.
pub fn load_rules(dir: Option<&PathBuf>) -> Result<vigil::rules::RulesetSource, Failure> {
    let source = match dir {
        Some(dir) => vigil::rules::RulesetSource::load(dir),
        None => vigil::rules::RulesetSource::shipped(),
    };
    source.map_err(|e| Failure::Input(format!("ruleset refused:\n{e}")))
}
