//! `trib topic create|list|describe|alter|delete` through the Kafka admin API.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::Subcommand;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use crate::client::{parse_kv, ClientArgs, TIMEOUT};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: i32,
        /// Topic config as key=value (repeatable), e.g. -c retention.ms=86400000.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topics with their partition counts.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a topic's configs or raise its partition count.
    Alter {
        name: String,
        /// Set a config (key=value, repeatable).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        /// Remove a config override, going back to the broker default (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// New, larger partition count.
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete topics and their data.
    Delete {
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn admin(c: &ClientArgs) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    c.config()?.create().context("cannot create admin client")
}

fn metadata(c: &ClientArgs, topic: Option<&str>) -> anyhow::Result<(BaseConsumer, Metadata)> {
    let consumer: BaseConsumer = c.config()?.create().context("cannot create client")?;
    let md = consumer
        .fetch_metadata(topic, TIMEOUT)
        .with_context(|| format!("cannot reach {}", c.brokers))?;
    Ok((consumer, md))
}

async fn describe_configs(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
) -> anyhow::Result<BTreeMap<String, (String, bool)>> {
    let res = a
        .describe_configs(
            [&ResourceSpecifier::Topic(name)],
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await?;
    let mut out = BTreeMap::new();
    for r in res {
        let r = r.map_err(|e| anyhow::anyhow!("describe configs of {name}: {e}"))?;
        for e in r.entries {
            let overridden = matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic);
            out.insert(e.name, (e.value.unwrap_or_default(), overridden));
        }
    }
    Ok(out)
}

pub async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            client,
        } => {
            let kvs = configs
                .iter()
                .map(|s| parse_kv(s, "--config"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut t = NewTopic::new(
                &name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for (k, v) in &kvs {
                t = t.set(k, v);
            }
            let res = admin(&client)?
                .create_topics([&t], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
                .await?;
            for r in res {
                r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
            }
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { client } => {
            let (_, md) = metadata(&client, None)?;
            let mut topics: Vec<_> = md
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            topics.sort();
            for (name, n) in topics {
                println!("{name}\t{n}");
            }
        }
        TopicCommand::Describe { name, client } => {
            let (consumer, md) = metadata(&client, Some(&name))?;
            let Some(t) = md.topics().iter().find(|t| t.name() == name) else {
                bail!("topic {name} not found")
            };
            if let Some(e) = t.error() {
                bail!("topic {name}: {e:?}");
            }
            println!("topic {name}: {} partition(s)", t.partitions().len());
            println!("partition\tleader\tlog-start\thigh-watermark");
            for p in t.partitions() {
                let (lo, hi) = consumer.fetch_watermarks(&name, p.id(), TIMEOUT)?;
                println!("{}\t{}\t{lo}\t{hi}", p.id(), p.leader());
            }
            println!("configs:");
            for (k, (v, o)) in describe_configs(&admin(&client)?, &name).await? {
                println!("  {k}={v}{}", if o { " (set on topic)" } else { "" });
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
            partitions,
            client,
        } => {
            let a = admin(&client)?;
            let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
            if !configs.is_empty() || !delete_configs.is_empty() {
                // AlterConfigs replaces the whole set: start from the topic's current overrides.
                let mut set: BTreeMap<String, String> = describe_configs(&a, &name)
                    .await?
                    .into_iter()
                    .filter(|(_, (_, o))| *o)
                    .map(|(k, (v, _))| (k, v))
                    .collect();
                for c in &configs {
                    let (k, v) = parse_kv(c, "--config")?;
                    set.insert(k, v);
                }
                for k in &delete_configs {
                    set.remove(k);
                }
                let mut ac = AlterConfig::new(ResourceSpecifier::Topic(&name));
                for (k, v) in &set {
                    ac = ac.set(k, v);
                }
                // The broker's own validation, for its exact reason: rdkafka 0.39 drops the
                // per-resource error of AlterConfigs (every resource comes back Ok).
                let canonical = trib_broker::config::BrokerConfig::default()
                    .topic_defaults()
                    .with_overrides(&set)
                    .map_err(|e| anyhow::anyhow!("cannot alter configs of {name}: {e}"))?
                    .describe(&set);
                for r in a.alter_configs([&ac], &opts).await? {
                    r.map_err(|(_, e)| anyhow::anyhow!("cannot alter configs of {name}: {e}"))?;
                }
                // So check that the broker holds what was set.
                let now = describe_configs(&a, &name).await?;
                for e in canonical.iter().filter(|e| set.contains_key(e.name)) {
                    if now.get(e.name).map(|(v, _)| v) != Some(&e.value) {
                        bail!(
                            "cannot alter configs of {name}: the broker did not take {}={} (it holds `{}`; see its log)",
                            e.name,
                            set[e.name],
                            now.get(e.name).map_or("", |(v, _)| v.as_str())
                        );
                    }
                }
                println!("configs of {name} updated");
            }
            if let Some(n) = partitions {
                for r in a
                    .create_partitions([&NewPartitions::new(&name, n)], &opts)
                    .await?
                {
                    r.map_err(|(_, e)| anyhow::anyhow!("cannot raise partitions of {name}: {e}"))?;
                }
                println!("{name} now has {n} partitions");
            }
        }
        TopicCommand::Delete { names, client } => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let res = admin(&client)?
                .delete_topics(&refs, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
                .await?;
            for r in res {
                let t = r.map_err(|(t, e)| anyhow::anyhow!("cannot delete topic {t}: {e}"))?;
                println!("deleted topic {t}");
            }
        }
    }
    Ok(())
}
