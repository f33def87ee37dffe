//! `decisions.jsonl`, `alerts.jsonl`, `control.jsonl` and `dlq.jsonl` in a folder.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{dead_letter_json, Sink, SinkError};
use crate::pipeline::Outputs;
use crate::source::Origin;
use crate::verdict::Decision;

#[derive(Debug)]
pub struct JsonlSink {
    dir: PathBuf,
    decisions: BufWriter<File>,
    alerts: BufWriter<File>,
    control: BufWriter<File>,
    dlq: BufWriter<File>,
    /// `shadow.jsonl`, created when the first shadow decision arrives.
    shadow: Option<BufWriter<File>>,
    /// One decision's JSON, before it is written.
    buf: Vec<u8>,
}

pub const FILES: [&str; 4] = ["decisions.jsonl", "alerts.jsonl", "control.jsonl", "dlq.jsonl"];

/// Decisions of a candidate ruleset running in shadow mode.
pub const SHADOW_FILE: &str = "shadow.jsonl";

impl JsonlSink {
    /// Creates `dir` if needed and truncates the four files.
    pub fn create(dir: &Path) -> Result<JsonlSink, SinkError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |error| SinkError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let open = |name: &str| -> Result<BufWriter<File>, SinkError> {
            let path = dir.join(name);
            Ok(BufWriter::with_capacity(1 << 16, File::create(&path).map_err(io(&path))?))
        };
        Ok(JsonlSink {
            dir: dir.to_path_buf(),
            decisions: open(FILES[0])?,
            alerts: open(FILES[1])?,
            control: open(FILES[2])?,
            dlq: open(FILES[3])?,
            shadow: None,
            buf: Vec::with_capacity(1024),
        })
    }

}

fn line<T: Serialize>(w: &mut BufWriter<File>, value: &T) -> Result<(), std::io::Error> {
    serde_json::to_writer(&mut *w, value).map_err(std::io::Error::other)?;
    w.write_all(b"\n")
}

fn decision_line(w: &mut BufWriter<File>, buf: &mut Vec<u8>, decision: &Decision) -> Result<(), std::io::Error> {
    buf.clear();
    decision.write_json(buf);
    buf.push(b'\n');
    w.write_all(buf)
}

impl Sink for JsonlSink {
    fn write(&mut self, out: &Outputs, _: &Origin) -> Result<(), SinkError> {
        let dir = &self.dir;
        let io = |error| SinkError::Io { path: dir.display().to_string(), error };
        for d in &out.decisions {
            decision_line(&mut self.decisions, &mut self.buf, d).map_err(io)?;
        }
        for a in &out.alerts {
            self.alerts.write_all(a.as_bytes()).and_then(|()| self.alerts.write_all(b"\n")).map_err(io)?;
        }
        for c in &out.commands {
            line(&mut self.control, c).map_err(io)?;
        }
        for d in &out.dead_letters {
            line(&mut self.dlq, &dead_letter_json(d)).map_err(io)?;
        }
        if !out.shadow_decisions.is_empty() {
            if self.shadow.is_none() {
                let path = self.dir.join(SHADOW_FILE);
                let file = File::create(&path).map_err(|error| SinkError::Io { path: path.display().to_string(), error })?;
                self.shadow = Some(BufWriter::new(file));
            }
            if let Some(w) = self.shadow.as_mut() {
                for d in &out.shadow_decisions {
                    decision_line(w, &mut self.buf, d).map_err(io)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        for (name, w) in FILES.iter().zip([&mut self.decisions, &mut self.alerts, &mut self.control, &mut self.dlq]) {
            let path = self.dir.join(name).display().to_string();
            w.flush().map_err(|error| SinkError::Io { path, error })?;
        }
        if let Some(w) = self.shadow.as_mut() {
            let path = self.dir.join(SHADOW_FILE).display().to_string();
            w.flush().map_err(|error| SinkError::Io { path, error })?;
        }
        Ok(())
    }
}
