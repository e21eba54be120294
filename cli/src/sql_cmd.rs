//! `trib sql`: SQL over the lake — one query (`-e`), a file of statements (`-f`), the
//! interactive prompt, or an HTTP endpoint (`--serve`).

use anyhow::Context;
use clap::Args;
use trib_sql::{Format, SqlLake};

use crate::lake_cmd::LakeArgs;

#[derive(Args)]
pub struct SqlArgs {
    /// Run this statement and exit (repeatable; run in order).
    #[arg(short = 'e', long = "execute")]
    execute: Vec<String>,
    /// Run the statements of this file (separated by `;`) and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    /// Output format: table, csv, json (one object per line) or parquet.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Write results to this file instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<std::path::PathBuf>,
    /// Answer queries over HTTP on this address (e.g. 127.0.0.1:8089) instead.
    #[arg(long)]
    serve: Option<String>,
    /// Broker for `tail('<topic>')` (the part of a topic not yet in the lake).
    #[arg(
        long,
        short = 'b',
        env = "TRIB_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// The broker's HTTP endpoint (host:port): `tail()` then answers `column = value` on the
    /// topic's indexed fields from the broker's field index.
    #[arg(long)]
    broker_http: Option<String>,
    #[command(flatten)]
    lake: LakeArgs,
}

pub async fn run(a: SqlArgs) -> anyhow::Result<()> {
    let lake = SqlLake::open(a.lake.open()?).await?;
    lake.enable_tail(&a.brokers, a.broker_http.as_deref());
    if let Some(addr) = &a.serve {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--serve {addr}: cannot listen"))?;
        tracing::info!(addr = %listener.local_addr()?, lake = %a.lake.path, "SQL endpoint listening");
        axum::serve(listener, trib_sql::http::router(lake)).await?;
        return Ok(());
    }
    let mut statements = a.execute.clone();
    if let Some(f) = &a.file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--file {}: cannot read", f.display()))?;
        statements.extend(
            text.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    if statements.is_empty() {
        return trib_sql::prompt::run(&lake, a.format).await;
    }
    let mut out: Box<dyn std::io::Write> = match &a.output {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .with_context(|| format!("--output {}: cannot create", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    for s in statements {
        let started = std::time::Instant::now();
        let (schema, batches) = lake
            .query(&s)
            .await
            .with_context(|| format!("query `{}`", s.trim()))?;
        trib_sql::output::write(&schema, &batches, a.format, &mut out)?;
        if a.format == Format::Table {
            eprintln!(
                "{}",
                trib_sql::output::rows_note(&batches, started.elapsed())
            );
        }
    }
    out.flush()?;
    Ok(())
}
