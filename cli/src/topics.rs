//! `vigil topics create`: the topics Vigil reads and writes, created where
//! missing with the configured partitions and replication.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vigil::kafka::{self, TopicOutcome};

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the activity, signals, decisions, alerts, control and DLQ topics.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT…]`.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// TOML configuration naming the topics (the same file as `vigil run --config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Partitions per topic (default from the configuration: 6).
    #[arg(long)]
    partitions: Option<i32>,
    /// Replicas per partition (default from the configuration: 1).
    #[arg(long)]
    replication: Option<i32>,
}

pub fn run(command: TopicsCommand) -> Result<(), Failure> {
    let TopicsCommand::Create(args) = command;
    if args.brokers.is_none() && args.config.is_none() {
        return Err(Failure::Input("`vigil topics create` needs `--brokers HOST:PORT` or `--config FILE`".into()));
    }
    let mut config = crate::run::kafka_config(args.config.as_ref(), args.brokers.as_ref(), None)?;
    if let Some(partitions) = args.partitions {
        config.create_topics.partitions = partitions;
    }
    if let Some(replication) = args.replication {
        config.create_topics.replication = replication;
    }
    config.validate()?;
    for (topic, outcome) in kafka::create_topics(&config)? {
        let what = match outcome {
            TopicOutcome::Created => "created",
            TopicOutcome::AlreadyThere => "already there",
        };
        println!("{topic}\t{what}");
    }
    Ok(())
}
