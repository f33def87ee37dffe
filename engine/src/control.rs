//! An operator's hands on a running engine.
//!
//! [`RuleControl`] changes the rules of every worker through the
//! [`RuleBoard`]: it watches the enforcing and the shadow ruleset folders,
//! and reloads, promotes or drops on request. A changed folder is loaded,
//! compiled and its cases run before anything is published; a broken
//! change is logged with `file:line`, counted, and the running rules stay.
//!
//! [`listen`] runs it on its own thread with the process signals:
//!
//! | signal          | effect                                            |
//! |-----------------|---------------------------------------------------|
//! | SIGTERM, SIGINT | stop: commit what is held, leave the group        |
//! | SIGHUP          | look at the rules folders now                     |
//! | SIGUSR1         | promote the shadow ruleset to enforcing           |
//! | SIGUSR2         | drop the shadow ruleset                           |
//!
//! The folders are also looked at once a second without any signal.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::rules::board::RuleBoard;
use crate::rules::watch::{Reload, RuleWatch};

/// How often the folders are looked at without a signal.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Swaps and refusals since start, for logs and metrics.
#[derive(Debug, Default)]
pub struct RuleCounts {
    pub swaps: AtomicU64,
    pub rejections: AtomicU64,
    pub promotions: AtomicU64,
}

#[derive(Debug)]
pub struct RuleControl {
    board: Arc<RuleBoard>,
    enforcing: Option<RuleWatch>,
    shadow: Option<RuleWatch>,
    pub counts: Arc<RuleCounts>,
}

impl RuleControl {
    /// Controls `board`; watches `enforcing_dir` and `shadow_dir` when given.
    pub fn new(board: Arc<RuleBoard>, enforcing_dir: Option<&Path>, shadow_dir: Option<&Path>) -> RuleControl {
        RuleControl {
            board,
            enforcing: enforcing_dir.map(|dir| RuleWatch::new(dir, WATCH_EVERY)),
            shadow: shadow_dir.map(|dir| RuleWatch::new(dir, WATCH_EVERY)),
            counts: Arc::default(),
        }
    }

    pub fn board(&self) -> &Arc<RuleBoard> {
        &self.board
    }

    /// Looks at the folders whose interval has passed.
    pub fn tick(&mut self) {
        self.look(false);
    }

    /// Looks at the folders now (a reload request).
    pub fn reload(&mut self) {
        tracing::info!("rule reload requested");
        self.look(true);
    }

    fn look(&mut self, now: bool) {
        let (_, published) = self.board.published();
        if let Some(watch) = self.enforcing.as_mut() {
            let running = published.enforcing.version.as_str();
            let found = if now { watch.check_now(running) } else { watch.check(running) };
            match found {
                Some(Reload::Swapped(host)) => {
                    self.counts.swaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(from = running, to = host.version(), "ruleset published to every worker");
                    self.board.enforce(host.source().clone());
                }
                Some(Reload::Rejected(reason)) => self.reject("enforcing", running, &reason),
                None => {}
            }
        }
        if let Some(watch) = self.shadow.as_mut() {
            let running = published.shadow.as_ref().map_or("", |s| s.version.as_str());
            let found = if now { watch.check_now(running) } else { watch.check(running) };
            match found {
                Some(Reload::Swapped(host)) => {
                    self.counts.swaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(candidate = host.version(), "shadow ruleset published to every worker");
                    self.board.shadow(host.source().clone());
                }
                Some(Reload::Rejected(reason)) => self.reject("shadow", running, &reason),
                None => {}
            }
        }
    }

    fn reject(&self, role: &str, running: &str, reason: &str) {
        self.counts.rejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(role, running, %reason, "ruleset change rejected; the running rules stay");
    }

    /// The shadow ruleset enforces from each worker's next record; its
    /// folder is then the one watched for the enforcing rules.
    pub fn promote(&mut self) -> bool {
        let promoted = self.board.promote();
        if promoted {
            self.counts.promotions.fetch_add(1, Ordering::Relaxed);
            if let Some(watch) = self.shadow.take() {
                self.enforcing = Some(watch);
            }
            tracing::info!(enforcing = self.board.published().1.enforcing.version, "shadow ruleset promoted");
        } else {
            tracing::warn!("promotion requested but no shadow ruleset runs");
        }
        promoted
    }

    /// Stops the shadow ruleset and the watch of its folder.
    pub fn drop_shadow(&mut self) -> bool {
        self.shadow = None;
        let dropped = self.board.drop_shadow();
        if dropped {
            tracing::info!("shadow ruleset dropped");
        }
        dropped
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for signals: {0}")]
pub struct ListenError(String);

/// Runs `control` (if any) and the signal handlers on their own thread
/// until `shutdown` is set, by a signal or by the caller.
pub fn listen(mut control: Option<RuleControl>, shutdown: Arc<AtomicBool>) -> Result<JoinHandle<()>, ListenError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ListenError(e.to_string()))?;
    std::thread::Builder::new()
        .name("vigil-control".into())
        .spawn(move || runtime.block_on(serve(&mut control, &shutdown)))
        .map_err(|e| ListenError(e.to_string()))
}

#[cfg(unix)]
async fn serve(control: &mut Option<RuleControl>, shutdown: &AtomicBool) {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = streams else {
        tracing::error!("signal handlers could not be installed; stop the engine with SIGKILL");
        return;
    };
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    while !shutdown.load(Ordering::Relaxed) {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => control.iter_mut().for_each(RuleControl::reload),
            _ = usr1.recv() => control.iter_mut().for_each(|c| { c.promote(); }),
            _ = usr2.recv() => control.iter_mut().for_each(|c| { c.drop_shadow(); }),
            _ = ticks.tick() => control.iter_mut().for_each(RuleControl::tick),
        }
    }
    if !shutdown.swap(true, Ordering::Relaxed) {
        tracing::info!("shutdown requested; committing and leaving the group");
    }
}

#[cfg(not(unix))]
async fn serve(control: &mut Option<RuleControl>, shutdown: &AtomicBool) {
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    while !shutdown.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticks.tick() => control.iter_mut().for_each(RuleControl::tick),
        }
    }
    shutdown.store(true, Ordering::Relaxed);
}
