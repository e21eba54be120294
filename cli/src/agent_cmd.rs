//! `trib agent`: runs the host agent's pipeline file (host sources such as `file`, `syslog`
//! and `socket` feeding a broker sink) with its metrics and health endpoint; `trib agent
//! status` reads that endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// The agent's pipeline file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address for /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:9599")]
    http: SocketAddr,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Health and per-component totals of a running agent.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:9599")]
        url: String,
    },
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    match a.command {
        Some(AgentCommand::Status { url }) => status(url.trim_end_matches('/')).await,
        None => {
            let config = a.config.ok_or_else(|| {
                anyhow::anyhow!("give the agent's pipeline file: trib agent --config agent.yaml")
            })?;
            crate::pipeline_cmd::serve_and_run(vec![config], Some(a.http)).await
        }
    }
}

async fn status(url: &str) -> anyhow::Result<()> {
    let health = crate::pipeline_cmd::fetch(&format!("{url}/health"))
        .await
        .map_err(|e| anyhow::anyhow!("the agent at {url} does not answer: {e}"))?;
    println!("health: {}", health.trim());
    let m =
        crate::pipeline_cmd::scrape(&crate::pipeline_cmd::fetch(&format!("{url}/metrics")).await?);
    let mut components: Vec<&String> = m.keys().map(|(c, _)| c).collect();
    components.dedup();
    println!(
        "{:<44} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "pipeline/component (kind)",
        "events in",
        "events out",
        "errors",
        "buffered",
        "disk buffer",
        "requests"
    );
    for c in components {
        let g = |k: &str| m.get(&(c.clone(), k.to_string())).copied().unwrap_or(0.0);
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
            c,
            g("events_in"),
            g("events_out"),
            g("errors"),
            g("buffered_events"),
            g("buffer_events"),
            g("requests_in") + g("requests_out")
        );
    }
    Ok(())
}
