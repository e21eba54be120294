//! Consumer groups with real clients: members share partitions evenly, a member killed with -9
//! loses its partitions to the others within the session timeout, committed offsets survive a
//! broker kill -9, and ListGroups/DescribeGroups report the group.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trib_e2e::TestBroker;

fn cfg(b: &TestBroker) -> ClientConfig {
    b.client_config()
}

fn member(b: &TestBroker, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = cfg(b)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

async fn setup(b: &TestBroker, topic: &str, partitions: i32, records: usize) {
    let admin: AdminClient<DefaultClientContext> = cfg(b).create().unwrap();
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let p: FutureProducer = cfg(b).set("linger.ms", "5").create().unwrap();
    let mut futs = Vec::new();
    for i in 0..records {
        futs.push(
            p.send_result(
                FutureRecord::to(topic)
                    .key(&format!("k{i}"))
                    .payload(&format!("v{i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until `pred` holds on their assignments; returns what each consumed.
fn poll_until(
    cs: &[&BaseConsumer],
    secs: u64,
    mut pred: impl FnMut(&[BTreeSet<i32>]) -> bool,
) -> Vec<Vec<(i32, i64)>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = vec![Vec::new(); cs.len()];
    loop {
        for (i, c) in cs.iter().enumerate() {
            while let Some(m) = c.poll(Duration::from_millis(20)) {
                let m = m.unwrap();
                got[i].push((m.partition(), m.offset()));
            }
        }
        let a: Vec<_> = cs.iter().map(|c| assigned(c)).collect();
        if pred(&a) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "group never reached the expected assignment: {a:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_rebalance_on_join_and_leave() {
    let b = TestBroker::start(&[]);
    setup(&b, "shared", 6, 600).await;
    let c1 = member(&b, "g-share", "shared");
    let c2 = member(&b, "g-share", "shared");
    let c3 = member(&b, "g-share", "shared");
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    let got = poll_until(&[&c1, &c2, &c3], 30, |a| {
        a.iter().all(|s| s.len() == 2) && a.iter().flatten().collect::<BTreeSet<_>>().len() == 6
    });
    got.into_iter().flatten().for_each(|x| {
        seen.insert(x);
    });
    // Everything gets consumed by the three of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 600 {
        assert!(Instant::now() < deadline, "consumed {} of 600", seen.len());
        for c in [&c1, &c2, &c3] {
            while let Some(m) = c.poll(Duration::from_millis(20)) {
                let m = m.unwrap();
                seen.insert((m.partition(), m.offset()));
            }
        }
    }
    assert_eq!(seen.len(), 600, "every record once per position");
    // One member leaves: the remaining two take all six partitions, three each.
    drop(c3);
    poll_until(&[&c1, &c2], 30, |a| {
        a.iter().all(|s| s.len() == 3) && a[0].is_disjoint(&a[1])
    });
    // ListGroups and DescribeGroups report the group and its two members.
    let list = c1
        .fetch_group_list(Some("g-share"), Duration::from_secs(5))
        .unwrap();
    let g = &list.groups()[0];
    assert_eq!(g.name(), "g-share");
    assert_eq!(g.state(), "Stable");
    assert_eq!(g.members().len(), 2);
    assert_eq!(g.protocol_type(), "consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_loses_its_partitions_within_the_session_timeout() {
    let b = TestBroker::start(&[]);
    setup(&b, "kill", 4, 40).await;
    if Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        panic!("kcat is required (scripts/test-env.sh installs it)");
    }
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &b.bootstrap(),
            "-G",
            "g-kill",
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            "-q",
            "kill",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = member(&b, "g-kill", "kill");
    poll_until(&[&c], 30, |a| a[0].len() == 2);
    kcat.kill().unwrap();
    let _ = kcat.wait();
    let killed = Instant::now();
    poll_until(&[&c], 30, |a| a[0].len() == 4);
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "partitions moved after {took:?}, session timeout is 6 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_broker_kill9() {
    let mut b = TestBroker::start(&[]);
    setup(&b, "commits", 2, 100).await;
    {
        let c = member(&b, "g-commit", "commits");
        let mut per: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while per.values().map(|o| o + 1).sum::<i64>() < 60 {
            assert!(Instant::now() < deadline);
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                let m = m.unwrap();
                per.insert(m.partition(), m.offset());
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &per {
            tpl.add_partition_offset("commits", *p, Offset::Offset(o + 1))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
        let committed = c.committed(Duration::from_secs(5)).unwrap();
        for (p, o) in &per {
            assert_eq!(
                committed.find_partition("commits", *p).unwrap().offset(),
                Offset::Offset(o + 1)
            );
        }
    }
    b.kill9();
    b.restart();
    // A fresh consumer of the group resumes exactly at the committed positions.
    let probe: BaseConsumer = cfg(&b).set("group.id", "g-commit").create().unwrap();
    let mut q = TopicPartitionList::new();
    q.add_partition("commits", 0);
    q.add_partition("commits", 1);
    let committed = probe.committed_offsets(q, Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum();
    assert!(
        total >= 60,
        "committed offsets survived the crash: {committed:?}"
    );
    let c = member(&b, "g-commit", "commits");
    let got = poll_until(&[&c], 30, |a| a[0].len() == 2);
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in got.into_iter().flatten() {
        first.entry(p).or_insert(o);
    }
    for e in committed.elements() {
        if let (Some(o), Some(f)) = (e.offset().to_raw(), first.get(&e.partition())) {
            assert_eq!(
                *f,
                o,
                "partition {} resumed at the committed offset",
                e.partition()
            );
        }
    }
}

/// KIP-848: librdkafka with `group.protocol=consumer`; the broker assigns partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_consumer_protocol_shares_and_hands_over_partitions() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg_file = cfg_dir.path().join("broker.yaml");
    std::fs::write(
        &cfg_file,
        "group_consumer_heartbeat_interval_ms: 500\ngroup_consumer_session_timeout_ms: 6000\n",
    )
    .unwrap();
    let b = TestBroker::start(&["-c", cfg_file.to_str().unwrap()]);
    setup(&b, "k848", 6, 300).await;
    let member848 = || -> BaseConsumer {
        let c: BaseConsumer = cfg(&b)
            .set("group.id", "g-848")
            .set("group.protocol", "consumer")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        c.subscribe(&["k848"]).unwrap();
        c
    };
    let c1 = member848();
    let c2 = member848();
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    let got = poll_until(&[&c1, &c2], 40, |a| {
        a[0].len() == 3 && a[1].len() == 3 && a[0].is_disjoint(&a[1])
    });
    got.into_iter().flatten().for_each(|x| {
        seen.insert(x);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 300 {
        assert!(Instant::now() < deadline, "consumed {} of 300", seen.len());
        for c in [&c1, &c2] {
            while let Some(m) = c.poll(Duration::from_millis(20)) {
                let m = m.unwrap();
                seen.insert((m.partition(), m.offset()));
            }
        }
    }
    // Commits are checked against the member epoch: commit the end of c1's partitions.
    let mut tpl = TopicPartitionList::new();
    for p in assigned(&c1) {
        let (_, hi) = c1
            .fetch_watermarks("k848", p, Duration::from_secs(5))
            .unwrap();
        tpl.add_partition_offset("k848", p, Offset::Offset(hi))
            .unwrap();
    }
    c1.commit(&tpl, CommitMode::Sync).unwrap();
    // One member leaves; the other ends up with all six partitions.
    drop(c2);
    poll_until(&[&c1], 40, |a| a[0].len() == 6);
    let list = c1.fetch_group_list(Some("g-848"), Duration::from_secs(5));
    // Classic DescribeGroups does not describe consumer-protocol groups; the list call must not fail.
    assert!(list.is_ok());
}
