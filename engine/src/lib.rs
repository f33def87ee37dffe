//! Vigil decides, while autonomous agents run, whether each action should
//! happen.
//!
//! The modules follow the data:
//!
//! - [`source`] reads records (JSON Lines files, Kafka);
//! - [`decode`] turns bytes (JSON, Avro) into validated [`event`] types;
//! - [`state`] is the per-agent and per-task risk state, a pure fold of events;
//! - [`rules`] hosts the Rhai rules that score each action against the state;
//! - [`decide`] turns scores and built-in obligations into a [`verdict`]:
//!   a decision, control commands and an OCSF alert;
//! - [`sink`] writes the outputs (JSON Lines files, Kafka);
//! - [`pipeline`] is the loop where the stages meet;
//! - [`metrics`] and [`http`] tell operators what the engine is doing.
//!
//! `state`, `rules` and `decide` know nothing of Kafka, threads or clocks:
//! the same input always gives the same bytes out.

pub mod caep;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod decide;
pub mod decode;
mod digest;
mod json;
pub mod event;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod sign;
pub mod sink;
pub mod source;
pub mod state;
pub mod verdict;
pub mod workload;
