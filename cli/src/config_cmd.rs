//! `vigil config check`: the configuration the engine would run with.

use std::path::PathBuf;

use clap::Subcommand;
use vigil::config::KafkaConfig;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (the file, then `VIGIL_…` overrides;
    /// secrets masked), or what is wrong with it and where.
    Check {
        /// The TOML file; the defaults when absent.
        file: Option<PathBuf>,
    },
}

pub fn run(command: ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Check { file } => match KafkaConfig::resolve(file.as_deref(), std::env::vars()) {
            Ok(config) => {
                print!("{}", config.to_masked_toml());
                Ok(())
            }
            Err(error) => Err(Failure::Check(format!("error: {error}"))),
        },
    }
}
