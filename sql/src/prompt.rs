//! The interactive prompt of `trib sql`: statements end with `;` and may span lines; history is
//! kept in `~/.trib_sql_history`. `\d` lists tables, `\d <table>` shows its columns,
//! `\format <table|csv|json>` changes the output, `\refresh` picks up new tables and columns,
//! `\q` quits. Works on a pipe too (one statement after another from stdin).

use std::time::Instant;

use rustyline::error::ReadlineError;

use crate::output::{self, Format};
use crate::SqlLake;

/// Runs the prompt until `\q` or end of input.
pub async fn run(lake: &SqlLake, mut format: Format) -> anyhow::Result<()> {
    let mut ed = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".trib_sql_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "trib> "
        } else {
            "  ...> "
        };
        let line = match ed.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            let _ = ed.add_history_entry(trimmed);
            match command(lake, trimmed, &mut format).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        let _ = ed.add_history_entry(sql.trim());
        run_one(lake, &sql, format, &mut std::io::stdout()).await;
    }
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    Ok(())
}

/// Runs one statement and prints its rows, or the error.
pub async fn run_one(lake: &SqlLake, sql: &str, format: Format, out: &mut dyn std::io::Write) {
    let started = Instant::now();
    match lake.query(sql).await {
        Ok((schema, batches)) => {
            if let Err(e) = output::write(&schema, &batches, format, out) {
                eprintln!("error: {e}");
            }
            if format == Format::Table {
                eprintln!("{}", output::rows_note(&batches, started.elapsed()));
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

/// A backslash command; true to quit.
async fn command(lake: &SqlLake, cmd: &str, format: &mut Format) -> anyhow::Result<bool> {
    let mut parts = cmd.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("\\q"), _) => return Ok(true),
        (Some("\\d"), None) => {
            for t in lake.refresh().await? {
                println!("{t}");
            }
        }
        (Some("\\d"), Some(table)) => {
            let sql = format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_name = '{}' ORDER BY ordinal_position;",
                table.replace('\'', "''")
            );
            run_one(lake, &sql, Format::Table, &mut std::io::stdout()).await;
        }
        (Some("\\format"), Some(f)) => {
            *format = f.parse().map_err(anyhow::Error::msg)?;
        }
        (Some("\\refresh"), None) => {
            lake.refresh().await?;
        }
        _ => anyhow::bail!(
            "unknown command `{cmd}` (\\d, \\d <table>, \\format <f>, \\refresh, \\q)"
        ),
    }
    Ok(false)
}
