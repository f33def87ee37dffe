//! The closed loop on a real broker: signed revocations reach the reference
//! subscriber, which verifies and acknowledges them; a forged command is
//! refused; a revocation the subscriber leaves unacknowledged is escalated
//! with an OCSF alert and sent again after the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use support::{config, decide, deadline, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::Delivery;
use vigil::kafka::acks::{self, Ack, Outcome, HEADER_REISSUE};
use vigil::kafka::subscriber::{Subscriber, SubscriberCounts};
use vigil::sign::KeyRing;
use vigil::verdict::{CommandKind, ControlCommand};
use vigil::workload::{generate, WorkloadSpec};

/// The commands `vigil run --input` writes for `lines`.
fn file_commands(lines: &[String]) -> Vec<ControlCommand> {
    support::file_output(lines, "control.jsonl").iter().map(|l| serde_json::from_slice(l).unwrap()).collect()
}

fn tracked(command: &ControlCommand) -> bool {
    matches!(command.command, CommandKind::RevokeCredentials | CommandKind::RevokeAgent | CommandKind::Quarantine)
}

#[test]
fn revocations_are_verified_acknowledged_and_escalated_when_ignored() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "acks", 1, Delivery::ExactlyOnce);
    let (_keys_dir, keys) = support::sign_with_new_key(&mut config);
    config.acks.track = true;
    // Long enough that a subscriber on a busy machine answers in time.
    config.acks.deadline = vigil::config::Span::millis(5000);
    config.acks.max_reissues = 1;

    // The engine's revocations for this workload, as the file engine makes
    // them: the subscriber will ignore the first revoked agent's.
    let lines = generate(&WorkloadSpec { tenants: 1, agents_per_tenant: 2, tasks_per_agent: 2, actions_per_task: 5, ..WorkloadSpec::default() });
    let expected = file_commands(&lines);
    let ignored_agent = expected.iter().find(|c| tracked(c)).unwrap().agent_id.clone();
    let want_acknowledged = expected.iter().filter(|c| tracked(c) && c.agent_id != ignored_agent).count() as u64;
    assert!(want_acknowledged > 0, "the workload revokes more than one agent");

    // A forged revocation, signed by a key the engine does not hold, is the
    // first thing on the control topic.
    let forged = ControlCommand {
        command_id: "c-forged".into(),
        issued_at: "2026-11-28T09:00:00Z".into(),
        command: CommandKind::RevokeAgent,
        tenant: "acme".into(),
        agent_id: "someone-else".into(),
        workload_id: "spiffe://acme.example/agents/someone-else".into(),
        task_id: None,
        credential_ids: vec![],
        reason: "forged".into(),
        decision_id: "d-forged".into(),
        expires_at: None,
    };
    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.control, &[Input::new(KeyRing::generate().sign(&forged))]);
    producer.flush();

    let shutdown = Arc::new(AtomicBool::new(false));
    let subscriber_counts = Arc::new(SubscriberCounts::default());
    let subscriber = {
        let ignored_agent = ignored_agent.clone();
        Subscriber {
            brokers: broker.brokers.clone(),
            control_topic: config.topics.control.clone(),
            acks_topic: config.topics.acks.clone(),
            name: format!("{}-subscriber", config.group_id),
            keys: keys.jwks(),
            enforce: Box::new(move |command| command.agent_id != ignored_agent),
            properties: Vec::new(),
        }
    };
    let peer = {
        let (stop, counts) = (Arc::clone(&shutdown), Arc::clone(&subscriber_counts));
        std::thread::spawn(move || subscriber.run(&stop, &counts))
    };
    // The subscriber is live once it refused the forgery.
    let until = deadline(120);
    let mut answers = Collector::new(&broker.brokers, &config.topics.acks);
    answers.until(until, |records| records.iter().any(|r| r.json()["command_id"] == "c-forged"));

    let (tracker, tracked_counts) = acks::spawn(&config, Arc::clone(&shutdown)).unwrap();
    let engine = Engine::start(&config, decide());
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
    let mut control = Collector::new(&broker.brokers, &config.topics.control);

    // The escalation: an OCSF alert for the ignored agent's revocation, and
    // the command sent again.
    let mut alerts = Collector::new(&broker.brokers, &config.topics.alerts);
    let unacknowledged = |r: &support::Output| {
        let alert = r.json();
        alert["finding_info"]["analytic"]["uid"] == "builtin.unacknowledged_revocation"
    };
    alerts.until(until, |records| records.iter().filter(|r| unacknowledged(r)).count() >= 2);
    control.until(until, |records| records.iter().any(|r| r.header(HEADER_REISSUE).is_some()));
    // The tracker has read every acknowledgement the subscriber sent.
    answers.until(until, |_| tracked_counts.acknowledged.load(Ordering::Relaxed) >= want_acknowledged);
    engine.stop();
    shutdown.store(true, Ordering::Relaxed);
    peer.join().unwrap().unwrap();
    tracker.join().unwrap();
    answers.drain(until);
    control.drain(until);

    let commands: Vec<ControlCommand> = control
        .records
        .iter()
        .filter(|r| r.header(HEADER_REISSUE).is_none())
        .filter_map(|r| acks::command_of(&r.payload))
        .filter(|c| c.command_id != "c-forged")
        .collect();
    let acks: Vec<Ack> = answers.records.iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect();
    // Every genuine command of other agents was enforced and acknowledged;
    // none of the ignored agent's; the forgery was refused.
    for command in &commands {
        let answered = acks.iter().find(|a| a.command_id == command.command_id);
        if command.agent_id == ignored_agent {
            assert!(answered.is_none(), "the ignored command {} was acknowledged", command.command_id);
        } else {
            assert_eq!(answered.map(|a| a.outcome), Some(Outcome::Enforced), "{}", command.command_id);
        }
    }
    let refusal = acks.iter().find(|a| a.command_id == "c-forged").unwrap();
    assert_eq!(refusal.outcome, Outcome::Rejected);
    assert_eq!(subscriber_counts.rejected.load(Ordering::Relaxed), 1);

    // Escalations concern the ignored agent only, and every alert is a
    // Detection Finding naming the command.
    let escalations: Vec<Value> = alerts.records.iter().filter(|r| unacknowledged(r)).map(support::Output::json).collect();
    for alert in &escalations {
        assert_eq!(alert["class_uid"], 2004);
        assert_eq!(alert["actor"]["user"]["uid"], ignored_agent.as_str());
        let id = alert["unmapped"]["command_id"].as_str().unwrap();
        assert!(commands.iter().any(|c| c.command_id == id && c.agent_id == ignored_agent));
    }
    let acknowledged = commands.iter().filter(|c| tracked(c) && c.agent_id != ignored_agent).count() as u64;
    assert_eq!(acknowledged, want_acknowledged, "the engine's revocations are the file engine's");
    assert_eq!(tracked_counts.acknowledged.load(Ordering::Relaxed), acknowledged);
    assert!(tracked_counts.escalated.load(Ordering::Relaxed) >= 2);
}
