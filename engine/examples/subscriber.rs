//! A reference subscriber of Vigil's control topic: verifies every command
//! against the engine's JWK set and acknowledges it on the acks topic.
//!
//! ```sh
//! cargo run --release -p vigil-engine --example subscriber -- \
//!     --brokers 127.0.0.1:9092 --jwks keys/jwks.json [--name broker-1] \
//!     [--control vigil.control] [--acks vigil.acks] [--ignore-agent AGENT]
//! ```
//!
//! `--ignore-agent` leaves that agent's commands unacknowledged, to watch
//! the engine escalate them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vigil::kafka::subscriber::{Subscriber, SubscriberCounts};
use vigil::sign::Jwks;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut jwks, mut name) = (String::from("127.0.0.1:9092"), None, String::from("reference-subscriber"));
    let (mut control, mut acks, mut ignore) = (String::from("vigil.control"), String::from("vigil.acks"), None);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--brokers" => brokers = value,
            "--jwks" => jwks = Some(value),
            "--name" => name = value,
            "--control" => control = value,
            "--acks" => acks = value,
            "--ignore-agent" => ignore = Some(value),
            other => {
                eprintln!("unknown flag `{other}`");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Some(jwks) = jwks else {
        eprintln!("`--jwks FILE` is required (vigil keys generate writes one)");
        return std::process::ExitCode::from(2);
    };
    let keys = match std::fs::read_to_string(&jwks).map_err(|e| e.to_string()).and_then(|t| Jwks::from_json(&t).map_err(|e| e.to_string())) {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("`{jwks}`: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let subscriber = Subscriber {
        brokers,
        control_topic: control,
        acks_topic: acks,
        name,
        keys,
        enforce: Box::new(move |command| {
            let enforce = ignore.as_deref() != Some(command.agent_id.as_str());
            println!("{} {} {} {}", if enforce { "enforce" } else { "ignore " }, command.command.as_str(), command.agent_id, command.command_id);
            enforce
        }),
        properties: Vec::new(),
    };
    let counts = Arc::new(SubscriberCounts::default());
    match subscriber.run(&AtomicBool::new(false), &counts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::from(1)
        }
    }
}
