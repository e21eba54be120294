//! The journald source: runs `journalctl --follow --output=json` and turns each entry into an
//! event. The cursor of the last entry the sinks delivered is saved in `state_dir` (in order,
//! atomically), and a restart resumes with `--after-cursor`, so entries are delivered at least
//! once and, after a clean stop, exactly once.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use trib_pipelines::config::sources::JournaldSource;
use trib_pipelines::event::{Event, Fields};
use trib_pipelines::finalize::{BatchNotifier, Status};
use trib_pipelines::runtime::{Source, SourceContext};

use crate::line_reader::{read_lines, Overlong};

const CURSOR_FILE: &str = "journald.cursor";

pub struct Journald {
    cfg: JournaldSource,
}

impl Journald {
    pub fn new(c: &JournaldSource) -> anyhow::Result<Self> {
        anyhow::ensure!(!c.state_dir.is_empty(), "state_dir: must not be empty");
        Ok(Self { cfg: c.clone() })
    }

    fn args(&self, cursor: Option<&str>) -> Vec<String> {
        let c = &self.cfg;
        let mut a = vec![
            "--follow".into(),
            "--output=json".into(),
            "--all".into(),
            "--no-pager".into(),
            "--quiet".into(),
        ];
        // --follow alone shows only the last 10 entries, also after a cursor.
        match cursor {
            Some(cur) => a.extend([format!("--after-cursor={cur}"), "--lines=all".into()]),
            None if c.since_now => a.push("--lines=0".into()),
            None => a.push("--lines=all".into()),
        }
        if let Some(d) = &c.directory {
            a.push(format!("--directory={d}"));
        }
        if c.current_boot_only {
            a.push("--boot".into());
        }
        for u in &c.units {
            a.push(format!("--unit={u}"));
        }
        a
    }
}

/// One journal entry as an event; `None` (logged) for a line that is not a JSON object.
fn entry_event(line: &[u8], cursor: &Mutex<Option<String>>) -> Option<Event> {
    let mut fields: Fields = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => m,
        _ => {
            tracing::warn!("journalctl printed a line that is not a JSON entry; skipped");
            return None;
        }
    };
    if let Some(Value::String(c)) = fields.remove("__CURSOR") {
        *cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }
    if let Some(m) = fields.remove("MESSAGE") {
        fields.insert("message".into(), Value::String(text(m)));
    }
    if let Some(h) = fields.remove("_HOSTNAME") {
        fields.insert("host".into(), h);
    }
    let realtime = fields
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<i64>().ok());
    let mut e = Event::from_fields(fields);
    if let Some(us) = realtime {
        e.timestamp_ms = us / 1000;
    }
    Some(e)
}

/// journalctl prints a field that is not valid UTF-8 as an array of byte values.
fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Array(bytes) => {
            let b: Vec<u8> = bytes
                .iter()
                .filter_map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            String::from_utf8_lossy(&b).into_owned()
        }
        other => other.to_string(),
    }
}

impl Source for Journald {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let state = PathBuf::from(&self.cfg.state_dir);
            let saved = std::fs::read_to_string(state.join(CURSOR_FILE))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            let mut child = tokio::process::Command::new(&self.cfg.journalctl_path)
                .args(self.args(saved.as_deref()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot run `{}` (the journald source needs systemd's journalctl): {e}",
                        self.cfg.journalctl_path
                    )
                })?;
            tracing::info!(source = %cx.name, resume = saved.is_some(), "reading the journal");
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("journalctl has no stdout"))?;
            let mut stderr = child.stderr.take();

            // Saves the cursor of each batch once it is delivered, in order.
            let (acks, mut pending) =
                mpsc::unbounded_channel::<(oneshot::Receiver<Status>, String)>();
            let saver_name = cx.name.clone();
            let saver = tokio::spawn(async move {
                while let Some((done, cursor)) = pending.recv().await {
                    if done.await != Ok(Status::Delivered) {
                        tracing::warn!(source = %saver_name, "journal entries not delivered; they are read again at the next start");
                        return;
                    }
                    let dir = state.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        trib_pipelines::state_file::write_atomic(
                            &dir,
                            CURSOR_FILE,
                            cursor.as_bytes(),
                        )
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        tracing::warn!(source = %saver_name, "cannot save the journal cursor");
                    }
                }
            });

            let cursor = Arc::new(Mutex::new(None::<String>));
            let seen = cursor.clone();
            let read = read_lines(
                BufReader::with_capacity(1 << 20, stdout),
                "journald",
                self.cfg.max_entry_bytes,
                Overlong::Skip,
                cx.shutdown.clone(),
                &cx.out,
                &cx.metrics,
                |line, _| {
                    let mut e = entry_event(&line, &seen)?;
                    e.meta.source = cx.name.clone();
                    Some(e)
                },
                |batch| {
                    let Some(c) = cursor.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
                        return;
                    };
                    let (notifier, done) = BatchNotifier::new();
                    for e in batch.iter_mut() {
                        *e = std::mem::take(e).with_finalizer(notifier.finalizer());
                    }
                    let _ = acks.send((done, c));
                },
            )
            .await;
            let stopping = cx.is_stopping();
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            drop(acks);
            let _ = saver.await;
            read?;
            if !stopping {
                let mut err = String::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(4096).read_to_string(&mut err).await;
                }
                anyhow::bail!(
                    "journalctl ended ({}): {}",
                    status.map_or("unknown status".into(), |s| s.to_string()),
                    err.trim()
                );
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_events_with_message_host_and_time() {
        let cursor = Mutex::new(None);
        let e = entry_event(
            br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","MESSAGE":[104,105,255],"_HOSTNAME":"h1","PRIORITY":"6"}"#,
            &cursor,
        )
        .unwrap();
        assert_eq!(e.fields["message"], "hi\u{fffd}");
        assert_eq!(e.fields["host"], "h1");
        assert_eq!(e.fields["PRIORITY"], "6");
        assert!(!e.fields.contains_key("__CURSOR"));
        assert_eq!(e.timestamp_ms, 1_700_000_000_123);
        assert_eq!(cursor.lock().unwrap().as_deref(), Some("s=1;i=2"));
        assert!(entry_event(b"not json", &cursor).is_none());
    }
}
