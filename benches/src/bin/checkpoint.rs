//! Checkpoint store comparison on the real snapshot shape: full and 10%
//! incremental checkpoints, restore, size on disk, memory per agent.
//!
//! `cargo run --release -p vigil-benches --bin checkpoint -- [AGENTS...] [redb|sled]`
//! (default: 100000 1000000, both stores)

use std::path::Path;
use std::time::{Duration, Instant};

use vigil::checkpoint::{self, CheckpointStore, Offsets, RedbStore};
use vigil::state::{State, StateConfig};
use vigil_benches::fold_agents;
use vigil_benches::sled_store::SledStore;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn dir_size(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| dir_size(&e.path())).sum()
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

struct Row {
    store: &'static str,
    agents: usize,
    full: Duration,
    incremental: Duration,
    restore: Duration,
    size: u64,
    data: u64,
}

fn measure(store_name: &'static str, agents: usize, open: &dyn Fn(&Path) -> Box<dyn CheckpointStore>) -> Row {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let path = dir.path().join("store");
    let mut state = State::new(StateConfig::default());
    fold_agents(&mut state, 0..agents, 3, 0);
    let store = open(&path);
    let offsets = Offsets::from([(("agent.activity".to_owned(), 0), agents as i64 * 3)]);
    let changes = state.take_changes(&[0]);
    let data: u64 = changes.iter().map(|c| (c.key.len() + c.value.as_ref().map_or(0, Vec::len)) as u64).sum();
    let (result, full) = time(|| store.commit(&changes, &offsets));
    result.unwrap_or_else(|e| unreachable!("{e}"));
    // 10% of the agents act again: an incremental checkpoint writes only them.
    fold_agents(&mut state, 0..agents / 10, 1, 100);
    let (result, incremental) = time(|| checkpoint::checkpoint(&mut state, store.as_ref(), &offsets));
    result.unwrap_or_else(|e| unreachable!("{e}"));
    let (restored, restore) = time(|| checkpoint::restore(store.as_ref(), StateConfig::default()));
    let (restored, _) = restored.unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(restored.agent_count(), agents);
    drop(store);
    Row { store: store_name, agents, full, incremental, restore, size: dir_size(&path), data }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // Store names among the arguments choose the stores; both by default.
    let only: Vec<&str> = args.iter().map(String::as_str).filter(|a| a.parse::<usize>().is_err()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };

    println!("memory per agent (with its task), counted by the state and as RSS growth:");
    for &n in &sizes {
        let before = rss_bytes();
        let mut state = State::new(StateConfig::default());
        fold_agents(&mut state, 0..n, 3, 0);
        let after = rss_bytes();
        let active = state.heap_bytes().total() as f64 / n as f64;
        // One event two hours later: the sweep drops the windows of every
        // agent quiet for an hour.
        fold_agents(&mut state, n..n + 1, 1, 7200);
        let idle = state.heap_bytes();
        let rss = (after.saturating_sub(before)) as f64 / n as f64;
        println!(
            "  {n:>9} agents: active {active:>5.0} B (RSS {rss:.0} B); idle {:>5.0} B, of which the agent alone {:>4.0} B",
            idle.total() as f64 / n as f64,
            idle.agents as f64 / n as f64
        );
        drop(state);
    }

    let redb = |p: &Path| -> Box<dyn CheckpointStore> { Box::new(RedbStore::open(p).unwrap_or_else(|e| unreachable!("{e}"))) };
    let sled = |p: &Path| -> Box<dyn CheckpointStore> { Box::new(SledStore::open(p).unwrap_or_else(|e| unreachable!("{e}"))) };
    println!("\n| store | agents | full checkpoint | 10% incremental | restore | on disk | encoded data |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for (name, open) in [("redb", &redb as &dyn Fn(&Path) -> Box<dyn CheckpointStore>), ("sled", &sled)] {
            if !only.is_empty() && !only.contains(&name) {
                continue;
            }
            let r = measure(name, n, open);
            println!(
                "| {} | {} | {:.2?} | {:.2?} | {:.2?} | {:.1} MiB | {:.1} MiB |",
                r.store,
                r.agents,
                r.full,
                r.incremental,
                r.restore,
                r.size as f64 / 1048576.0,
                r.data as f64 / 1048576.0
            );
        }
    }
}
