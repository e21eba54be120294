//! The journald source end to end, on real journal files: entries written by
//! systemd-journal-remote (from systemd's export format) are read through journalctl, new
//! journal files are followed, and a restart resumes after the saved cursor without reading
//! anything twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use trib_e2e::TestRun;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Writes entries `range` into a new journal file `dir/name` with systemd-journal-remote.
fn write_journal(dir: &Path, name: &str, range: std::ops::Range<usize>) {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: install Debian's systemd-journal-remote (scripts/test-env.sh does)"
    );
    let mut export = String::new();
    for i in range {
        let t = 1_700_000_000_000_000u64 + i as u64 * 1000;
        export.push_str(&format!(
            "__CURSOR=x\n__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=testhost\n_SYSTEMD_UNIT={}\nPRIORITY=6\nMESSAGE=journal entry {i}\n\n",
            i + 1,
            if i % 10 == 0 { "other.service" } else { "app.service" }
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join(name).display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run systemd-journal-remote");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Messages written to the output file, with their counts.
fn messages(out: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert_eq!(v["host"], "testhost");
        assert_eq!(v["_SYSTEMD_UNIT"], "app.service", "only the unit asked for");
        *m.entry(v["message"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    m
}

fn wait_for(out: &Path, n: usize, run: &TestRun) -> BTreeMap<String, usize> {
    trib_e2e::poll_until(
        Duration::from_secs(30),
        || messages(out),
        |m| m.len() >= n,
        |m| format!("{} of {n} entries; log:\n{}", m.len(), run.log_text()),
    )
}

/// Entries of app.service among 0..n (every tenth is another unit's).
fn app_entries(n: usize) -> usize {
    (0..n).filter(|i| i % 10 != 0).count()
}

#[test]
fn journal_entries_are_followed_and_resumed_after_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let out = dir.path().join("out.ndjson");
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  journal:\n    type: journald\n    directory: {}\n    units: [app.service]\n    state_dir: {}\n\
             sinks:\n  out:\n    type: file\n    inputs: [journal]\n    path: {}\n    encoding: json\n    batch: {{timeout_ms: 20}}\n",
            journal.display(),
            dir.path().join("state").display(),
            out.display()
        ),
    )
    .unwrap();
    let agent = || {
        TestRun::command(
            &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
            &[],
        )
    };

    write_journal(&journal, "a.journal", 0..300);
    let mut run = agent();
    wait_for(&out, app_entries(300), &run);
    // A new journal file is picked up while following.
    write_journal(&journal, "b.journal", 300..500);
    wait_for(&out, app_entries(500), &run);
    assert!(run.stop(), "clean stop");

    // Restart: continue after the saved cursor, nothing read twice.
    write_journal(&journal, "c.journal", 500..600);
    let mut run = agent();
    let m = wait_for(&out, app_entries(600), &run);
    std::thread::sleep(Duration::from_millis(500));
    let m2 = messages(&out);
    assert_eq!(m, m2, "nothing more arrives");
    for i in (0..600).filter(|i| i % 10 != 0) {
        assert_eq!(
            m.get(&format!("journal entry {i}")),
            Some(&1),
            "entry {i} exactly once"
        );
    }
    assert!(run.stop());
}
