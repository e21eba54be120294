//! `trib`: the Tributary command line. Subcommands live one per module: `broker` runs the
//! broker, `topic` administers topics, `produce`/`consume` move records from and to the
//! terminal, `bench` measures any Kafka-protocol broker.

mod agent_cmd;
mod bench;
mod bench_producers;
mod bench_txn;
mod broker_cmd;
mod client;
mod consume;
mod group;
mod lake_cmd;
mod lake_read;
mod mirror_cmd;
mod pipeline_cmd;
mod produce;
mod query_cmd;
mod sql_cmd;
mod topic;
mod up_cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: pipelines allocate per event (parsed fields), and
/// glibc's malloc/free took a quarter of a pipeline's CPU in `perf` (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trib",
    version,
    about = "Tributary: a Kafka-compatible stream data platform in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Kafka-protocol broker.
    Broker(broker_cmd::BrokerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce records from stdin or a file, one per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Start an embedded broker and pipelines (default: the quickstart) on this machine.
    Up(up_cmd::UpArgs),
    /// Run the host agent (`--config agent.yaml`), or `trib agent status`.
    Agent(agent_cmd::AgentArgs),
    /// Run pipeline files (sources -> transforms -> sinks); reloads them when they change.
    Run(pipeline_cmd::RunArgs),
    /// Validate, test and inspect pipeline files.
    #[command(subcommand)]
    Pipeline(pipeline_cmd::PipelineCommand),
    /// Measure produce or consume throughput and latency against any Kafka-protocol broker.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Export topics into the lake and compact it.
    #[command(subcommand)]
    Lake(lake_cmd::LakeCommand),
    /// Copy topics between clusters at the same offsets (`--config mirror.yaml`); status, failover.
    Mirror(mirror_cmd::MirrorArgs),
    /// Query the lake with SQL: one statement, a file, a prompt, or an HTTP endpoint.
    Sql(sql_cmd::SqlArgs),
    /// Find records by time window, offset range or indexed field (`--where f=v`).
    Query(query_cmd::QueryArgs),
    /// The field index of a topic: status, rebuild.
    #[command(subcommand)]
    Index(query_cmd::IndexCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Broker(a) => broker_cmd::run(a).await,
            Command::Topic(c) => topic::run(c).await,
            Command::Produce(a) => produce::run(a).await,
            Command::Consume(a) => consume::run(a).await,
            Command::Group(c) => group::run(c).await,
            Command::Bench(c) => bench::run(c).await,
            Command::Agent(a) => agent_cmd::run(a).await,
            Command::Up(a) => up_cmd::run(a).await,
            Command::Run(a) => pipeline_cmd::run(a).await,
            Command::Pipeline(c) => pipeline_cmd::command(c).await,
            Command::Lake(c) => lake_cmd::run(c).await,
            Command::Mirror(a) => mirror_cmd::run(a).await,
            Command::Sql(a) => sql_cmd::run(a).await,
            Command::Query(a) => query_cmd::run(a).await,
            Command::Index(c) => query_cmd::index(c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
