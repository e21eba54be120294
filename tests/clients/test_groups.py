"""Consumer groups against trib, as users rely on them: the classic protocol with confluent-kafka
(disjoint assignments, exactly-once delivery without failures, a member leaving, a member
SIGKILLed, static membership), committed offsets across a clean restart and a kill -9
(confluent-kafka and kafka-python), kafka-python and aiokafka group consumers, KIP-848
(`group.protocol=consumer`), the AdminClient's group listing and description, a churn of members
under a continuous producer, and the `trib group` CLI.

Group consumers here run in threads (`Member`) or, where a test SIGKILLs one, as processes
(`group_worker.py`). They commit synchronously after processing each batch, before polling again,
so a partition moved by a rebalance resumes exactly where the previous owner stopped."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupType,
    KafkaException,
    Producer,
    TopicPartition,
)

from helpers import TS0, ck_admin, ck_conf, ck_create_topic, ck_produce, ck_watermarks, wait_until

WORKER = Path(__file__).with_name("group_worker.py")
SESSION_MS = 6000  # the broker's smallest allowed session timeout


# --- confluent-kafka group members ----------------------------------------------------------


def group_conf(broker, group: str, **extra) -> dict:
    """A confluent-kafka group consumer's settings; a None value removes a default."""
    conf = ck_conf(
        broker,
        **{
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
        },
    )
    conf.update(extra)
    return {k: v for k, v in conf.items() if v is not None}


KIP848 = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}


class Member:
    """A confluent-kafka group consumer polling `topic` in its own thread. After each batch it
    commits (synchronously) the offsets after what it processed, before it polls again. It
    tracks its assignment (consumer.assignment() after every poll) and counts its rebalance
    callbacks."""

    def __init__(self, broker, topic: str, group: str, name: str = "member", commit=True,
                 **conf):
        self.name = name
        self.topic = topic
        self.conf = group_conf(broker, group, **{"client.id": name, **conf})
        self.commit = commit
        self.lock = threading.Lock()
        self.records: list[tuple[int, int, bytes]] = []  # (partition, offset, value)
        self.assignment: frozenset[int] | None = None
        self.member_id = ""
        self.assign_calls = 0
        self.revoke_calls = 0
        self.lost_calls = 0
        # (time, "assign"|"revoke"|"lost", partitions) from the rebalance callbacks: for the
        # eager protocol the whole assignment, for cooperative/KIP-848 the increments.
        self.ownership: list[tuple[float, str, frozenset[int]]] = []
        self.commits: list[dict[int, int]] = []
        self.commit_errors: list[str] = []
        self.errors: list[str] = []
        self.failure: BaseException | None = None
        self._requests: list = []
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _commit(self, c, pending: dict[int, int]) -> None:
        if not pending:
            return
        try:
            c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in pending.items()],
                     asynchronous=False)
            with self.lock:
                self.commits.append(dict(pending))
        except KafkaException as e:
            with self.lock:
                self.commit_errors.append(str(e))
        pending.clear()

    def commit_now(self, offsets: dict[int, int], timeout: float = 15) -> None:
        """Has the member thread commit `offsets` (as this member of the group) and waits."""
        done = threading.Event()
        with self.lock:
            self._requests.append((dict(offsets), done))
        assert done.wait(timeout), f"{self.name}: requested commit not done in {timeout}s"
        with self.lock:
            assert self.commits and self.commits[-1] == offsets, self.commit_errors

    def _run(self) -> None:
        try:
            c = Consumer(self.conf)
            pending: dict[int, int] = {}

            def on_assign(_c, parts):
                with self.lock:
                    self.assign_calls += 1
                    self.ownership.append((time.monotonic(), "assign",
                                           frozenset(tp.partition for tp in parts)))

            def on_revoke(consumer, parts):
                if self.commit:
                    self._commit(consumer, pending)
                with self.lock:
                    self.revoke_calls += 1
                    self.ownership.append((time.monotonic(), "revoke",
                                           frozenset(tp.partition for tp in parts)))

            def on_lost(_c, parts):
                pending.clear()
                with self.lock:
                    self.lost_calls += 1
                    self.ownership.append((time.monotonic(), "lost",
                                           frozenset(tp.partition for tp in parts)))

            c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
            try:
                while not self._stop.is_set():
                    msgs = c.consume(num_messages=200, timeout=0.1)
                    got = []
                    for m in msgs:
                        if m.error():
                            with self.lock:
                                self.errors.append(str(m.error()))
                            continue
                        got.append((m.partition(), m.offset(), m.value()))
                        pending[m.partition()] = m.offset() + 1
                    with self.lock:
                        self.records.extend(got)
                        self.assignment = frozenset(tp.partition for tp in c.assignment())
                        self.member_id = c.memberid() or self.member_id
                    if self.commit:
                        self._commit(c, pending)
                    with self.lock:
                        requests, self._requests = self._requests, []
                    for offsets, done in requests:
                        self._commit(c, dict(offsets))
                        done.set()
            finally:
                c.close()
        except BaseException as e:  # reported by stop()
            self.failure = e
        finally:
            self.closed.set()

    def current(self) -> frozenset[int] | None:
        with self.lock:
            return self.assignment

    def consumed(self) -> list[tuple[int, int, bytes]]:
        with self.lock:
            return list(self.records)

    def callbacks(self) -> tuple[int, int, int]:
        with self.lock:
            return (self.assign_calls, self.revoke_calls, self.lost_calls)

    def stop(self, timeout: float = 20) -> None:
        """Closes the consumer (LeaveGroup for a dynamic member) and waits for the thread."""
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name}: close() did not return in {timeout}s"
        if self.failure is not None:
            raise AssertionError(f"{self.name} failed: {self.failure!r}") from self.failure


def ownership_intervals(m: Member) -> dict[int, list[tuple[float, float]]]:
    """partition -> [(from, to)] during which the member's application owned it (from the
    on_assign callback to the end of on_revoke/on_lost; `to` is inf while still owned)."""
    with m.lock:
        log = list(m.ownership)
    out: dict[int, list[tuple[float, float]]] = {}
    since: dict[int, float] = {}
    for t, kind, parts in log:
        for p in parts:
            if kind == "assign":
                since.setdefault(p, t)
            elif p in since:
                out.setdefault(p, []).append((since.pop(p), t))
    for p, t in since.items():
        out.setdefault(p, []).append((t, float("inf")))
    return out


def assert_no_double_ownership(members) -> None:
    """No partition was ever owned by two members' applications at the same time: the group
    protocol hands a partition over only after its previous owner gave it up."""
    spans = [(m.name, p, a, b) for m in members for p, iv in ownership_intervals(m).items()
             for a, b in iv]
    clashes = []
    for i, (n1, p1, a1, b1) in enumerate(spans):
        for n2, p2, a2, b2 in spans[i + 1:]:
            if p1 == p2 and n1 != n2 and a1 < b2 and a2 < b1:
                clashes.append(f"partition {p1}: {n1} [{a1:.2f}, {b1:.2f}) and "
                               f"{n2} [{a2:.2f}, {b2:.2f})")
    assert not clashes, "partitions owned by two members at once:\n" + "\n".join(clashes[:10])


def stop_all(members) -> None:
    for m in members:
        if not m.closed.is_set():
            m._stop.set()
    for m in members:
        m.thread.join(20)


def settled(members, partitions, sizes=None):
    """The members' assignments when they are disjoint, cover `partitions` and none is empty
    (a completed generation); else None."""
    current = [m.current() for m in members]
    if any(not a for a in current):
        return None
    union = set().union(*current)
    if union != set(partitions) or sum(len(a) for a in current) != len(union):
        return None
    if sizes is not None and sorted(len(a) for a in current) != sorted(sizes):
        return None
    return current


def wait_settled(members, partitions, timeout: float = 20, sizes=None):
    return wait_until(lambda: settled(members, partitions, sizes), timeout=timeout,
                      what=f"assignments of {[m.name for m in members]} to settle")


def numbered(n: int, partitions: int, start: int = 0, **extra) -> list[dict]:
    return [{"value": str(i).encode(), "partition": i % partitions, **extra}
            for i in range(start, start + n)]


def by_partition(records) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p, o, _v in records:
        out.setdefault(p, []).append(o)
    return out


def committed(broker, group: str, topic: str, partitions) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch through confluent-kafka's committed())."""
    c = Consumer(group_conf(broker, group))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
    finally:
        c.close()
    for tp in tps:
        assert tp.error is None, tp.error
    return {tp.partition: tp.offset for tp in tps}


def ends(broker, topic: str, partitions) -> dict[int, int]:
    return {p: ck_watermarks(broker, topic, p)[1] for p in partitions}


# --- 1. classic protocol: three members ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_classic_three_members_disjoint_exactly_once_and_leave(broker, topic_name, strategy):
    topic = ck_create_topic(broker, topic_name(), partitions=6)
    group = f"g-{topic}"
    ck_produce(broker, topic, numbered(300, 6))
    members = [Member(broker, topic, group, f"m{i}",
                      **{"partition.assignment.strategy": strategy}) for i in range(3)]
    try:
        assigned = wait_settled(members, range(6), sizes=[2, 2, 2])
        ck_produce(broker, topic, numbered(300, 6, start=300))
        wait_until(lambda: sum(len(m.consumed()) for m in members) >= 600, timeout=20,
                   what="600 records consumed")
        time.sleep(0.5)  # nothing more may arrive
        everything = [r for m in members for r in m.consumed()]
        assert sorted(int(v) for _p, _o, v in everything) == list(range(600)), \
            "every record exactly once across the group"
        assert len({(p, o) for p, o, _v in everything}) == 600
        # Since the last rebalance, each member read only its own partitions.
        for m, parts in zip(members, assigned):
            assert m.current() == parts
        assert all(not m.commit_errors and not m.errors for m in members), \
            [(m.name, m.commit_errors, m.errors) for m in members]
        assert committed(broker, group, topic, range(6)) == {p: 100 for p in range(6)}

        # One member closes (LeaveGroup): its partitions move to the other two.
        gone = members[0].current()
        members[0].stop()
        survivors = members[1:]
        after = wait_settled(survivors, range(6), sizes=[3, 3])
        assert gone <= after[0] | after[1]
        before = [len(m.consumed()) for m in survivors]
        ck_produce(broker, topic, numbered(120, 6, start=600))
        wait_until(lambda: sum(len(m.consumed()) for m in survivors) - sum(before) >= 120,
                   timeout=20, what="120 more records consumed by the survivors")
        time.sleep(0.5)
        new = [r for m, n in zip(survivors, before) for r in m.consumed()[n:]]
        assert sorted(int(v) for _p, _o, v in new) == list(range(600, 720))
        for m, n, parts in zip(survivors, before, after):
            assert {p for p, _o, _v in m.consumed()[n:]} <= parts
        assert committed(broker, group, topic, range(6)) == {p: 120 for p in range(6)}
    finally:
        stop_all(members)
    for m in members:
        assert m.failure is None, (m.name, m.failure)
    assert_no_double_ownership(members)


# --- 2. SIGKILL of a member ------------------------------------------------------------------


class Worker:
    """A group_worker.py process; its JSON events are collected with arrival times."""

    def __init__(self, broker, topic, group, name, **settings):
        self.name = name
        cfg = {"bootstrap": broker.bootstrap, "topic": topic, "group": group,
               "conf": {"client.id": name, "session.timeout.ms": SESSION_MS,
                        "heartbeat.interval.ms": 500}, **settings}  # conf= replaces these
        # librdkafka logs to stderr: a file, so a full pipe can never block the worker.
        self.stderr_path = broker.tmp / f"worker-{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(cfg)],
                                         stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL)
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            with self.lock:
                self.events.append((time.monotonic(), ev))

    def evs(self, kind: str | None = None) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, e) for t, e in self.events if kind is None or e["ev"] == kind]

    def assignment(self) -> set[int] | None:
        a = self.evs("assignment")
        return set(a[-1][1]["parts"]) if a else None

    def records(self) -> list[tuple[int, int, str]]:
        return [tuple(r) for _t, e in self.evs("recs") for r in e["recs"]]

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"worker {self.name} did not stop on SIGTERM in {timeout}s")
        self.reader.join(5)

    def kill(self) -> float:
        self.proc.kill()
        t = time.monotonic()
        self.proc.wait(10)
        self.reader.join(5)
        return t

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def test_sigkilled_member_partitions_move_at_least_once(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=6)
    group = f"g-{topic}"
    survivor = Worker(broker, topic, group, "survivor", commit_every=20)
    victim = None
    try:
        wait_until(lambda: survivor.assignment() == set(range(6)), timeout=20,
                   what="the first member to get every partition")
        # The victim processes slowly and commits every 100 records.
        victim = Worker(broker, topic, group, "victim", commit_every=100, sleep_per_record=0.002)

        def split():
            a, b = survivor.assignment(), victim.assignment()
            return a and b and not (a & b) and (a | b) == set(range(6)) and (a, b)

        s_parts, v_parts = wait_until(split, timeout=20, what="a two-member assignment")
        ck_produce(broker, topic, numbered(2400, 6))
        wait_until(lambda: len(victim.records()) >= 300 and victim.evs("commit-done"),
                   timeout=20, what="the victim to process 300 records and commit")
        t_kill = victim.kill()
        assert victim.proc.returncode == -signal.SIGKILL
        v_recs = victim.records()
        assert len(v_recs) < 1200, "the victim finished before the kill: slow it down"

        t_all = wait_until(lambda: survivor.assignment() == set(range(6)) and time.monotonic(),
                           timeout=SESSION_MS / 1000 + 10,
                           what="the survivor to take over every partition")
        took = t_all - t_kill
        assert took <= SESSION_MS / 1000 + 4, \
            f"partitions moved {took:.1f}s after the kill (session timeout {SESSION_MS} ms)"
        # Takeover comes from session expiry: not before most of the session timeout passed.
        assert took >= SESSION_MS / 1000 - 1.5, f"partitions moved only {took:.1f}s after kill"

        def all_read():
            got = {(p, o) for p, o, _v in survivor.records() + v_recs}
            return len(got) >= 2400
        wait_until(all_read, timeout=30, what="every record consumed by someone")
        survivor.stop()
        assert survivor.evs("closed")
        s_recs = survivor.records()
    except BaseException:
        for w in (survivor, victim):
            if w is not None:
                print(f"--- worker {w.name} stderr ---\n{w.stderr()}")
        raise
    finally:
        for w in (survivor, victim):
            if w is not None and w.proc.poll() is None:
                w.kill()
    assert not survivor.evs("commit-failed") and not victim.evs("commit-failed"), \
        (survivor.evs("commit-failed"), victim.evs("commit-failed"))
    assert not survivor.evs("error") and not victim.evs("error")

    # What the victim's commits covered: acknowledged ones, and a possible one in flight.
    done: dict[int, int] = {}
    for _t, e in victim.evs("commit-done"):
        done.update({int(p): o for p, o in e["offsets"].items()})
    begun = victim.evs("commit-begin")
    in_flight = {}
    if begun and len(begun) > len(victim.evs("commit-done")):
        in_flight = {int(p): o for p, o in begun[-1][1]["offsets"].items()}

    v_by, s_by = by_partition(v_recs), by_partition(s_recs)
    for p in range(6):
        mine_v, mine_s = v_by.get(p, []), s_by.get(p, [])
        assert len(set(mine_v)) == len(mine_v), f"victim read an offset twice on {p}"
        assert len(set(mine_s)) == len(mine_s), f"survivor read an offset twice on {p}"
        assert set(mine_v) | set(mine_s) == set(range(400)), f"records lost on partition {p}"
        if p in s_parts:
            assert not mine_v, f"victim read partition {p} it never owned"
            continue
        assert p in v_parts
        resumed = min(mine_s)
        allowed = {done.get(p, 0)} | ({in_flight[p]} if p in in_flight else set())
        assert resumed in allowed, \
            f"survivor resumed partition {p} at {resumed}, commits covered {allowed}"
        dups = set(mine_v) & set(mine_s)
        assert all(o >= done.get(p, 0) for o in dups), \
            f"partition {p}: records before the last acknowledged commit read twice"
        assert dups == set(range(resumed, max(mine_v, default=-1) + 1))
    # The survivor's own partitions were never read twice; its final commits cover everything.
    assert committed(broker, group, topic, range(6)) == {p: 400 for p in range(6)}


# --- 3. committed offsets across restart and kill -9 -----------------------------------------


def ck_commit_as_member(broker, group, topic, offsets: dict[int, int], first_expected=None,
                        timeout: float = 20) -> dict[int, int]:
    """Joins `group` (subscribe), reads the first record of each partition it owns (checking
    it against `first_expected`), commits `offsets` and closes. Returns the first offsets."""
    c = Consumer(group_conf(broker, group))
    firsts: dict[int, int] = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        want = set(offsets)
        while set(firsts) != want:
            assert time.monotonic() < deadline, f"first records seen only on {sorted(firsts)}"
            for m in c.consume(num_messages=100, timeout=0.1):
                assert not m.error(), m.error()
                firsts.setdefault(m.partition(), m.offset())
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                 asynchronous=False)
    finally:
        c.close()
    if first_expected is not None:
        assert firsts == first_expected, "confluent-kafka did not resume at the committed offsets"
    return firsts


def kp_consumer(broker, group, topic):
    from kafka import KafkaConsumer

    return KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
                         fetch_max_wait_ms=100, request_timeout_ms=15000)


def kp_read(c, until: dict[int, int], timeout: float = 25) -> list:
    """Polls until the consumer's position on each partition reaches `until`."""
    from kafka import TopicPartition as KTP

    out = []
    deadline = time.monotonic() + timeout
    topic = next(iter(c.subscription()))
    while True:
        got = {p: len([r for r in out if r.partition == p]) for p in until}
        assigned = {tp.partition for tp in c.assignment()}
        if assigned == set(until) and all(c.position(KTP(topic, p)) >= o
                                          for p, o in until.items()):
            return out
        assert time.monotonic() < deadline, f"kafka-python read {got} in {timeout}s"
        for recs in c.poll(timeout_ms=200, max_records=1000).values():
            out.extend(recs)


def kp_committed(broker, group, topic, partitions) -> dict[int, int | None]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                      enable_auto_commit=False, request_timeout_ms=15000)
    try:
        return {p: c.committed(KTP(topic, p)) for p in partitions}
    finally:
        c.close(autocommit=False)


def test_committed_offsets_survive_restart_and_kill9(broker, topic_name):
    from kafka import OffsetAndMetadata
    from kafka import TopicPartition as KTP

    topic = ck_create_topic(broker, topic_name(), partitions=3)
    ck_produce(broker, topic, numbered(180, 3))  # 60 per partition
    ck_group, kp_group = f"ck-{topic}", f"kp-{topic}"

    # Round 1: explicit offsets.
    ck_commit_as_member(broker, ck_group, topic, {0: 11, 1: 22, 2: 33},
                        first_expected={0: 0, 1: 0, 2: 0})
    c = kp_consumer(broker, kp_group, topic)
    try:
        kp_read(c, {0: 1, 1: 1, 2: 1})
        c.commit({KTP(topic, p): OffsetAndMetadata(o, "", -1)
                  for p, o in {0: 5, 1: 6, 2: 7}.items()})
    finally:
        c.close(autocommit=False)

    assert broker.restart() == 0
    for reader in (committed, kp_committed):
        assert reader(broker, ck_group, topic, range(3)) == {0: 11, 1: 22, 2: 33}, reader
        assert reader(broker, kp_group, topic, range(3)) == {0: 5, 1: 6, 2: 7}, reader

    # Round 2: new consumers resume at the committed offsets, then commit again.
    ck_commit_as_member(broker, ck_group, topic, {0: 40, 1: 50, 2: 60},
                        first_expected={0: 11, 1: 22, 2: 33})
    c = kp_consumer(broker, kp_group, topic)
    try:
        recs = kp_read(c, {0: 60, 1: 60, 2: 60})
        firsts = {p: min(r.offset for r in recs if r.partition == p) for p in range(3)}
        assert firsts == {0: 5, 1: 6, 2: 7}, "kafka-python did not resume at the committed offsets"
        assert len(recs) == 180 - 18
        c.commit()  # the consumed positions: 60 on each partition
    finally:
        c.close(autocommit=False)

    assert broker.restart(kill=True) == -signal.SIGKILL
    for reader in (committed, kp_committed):
        assert reader(broker, ck_group, topic, range(3)) == {0: 40, 1: 50, 2: 60}, reader
        assert reader(broker, kp_group, topic, range(3)) == {0: 60, 1: 60, 2: 60}, reader

    ck_produce(broker, topic, numbered(30, 3, start=180))  # 70 per partition
    ck_commit_as_member(broker, ck_group, topic, {0: 70, 1: 70, 2: 70},
                        first_expected={0: 40, 1: 50, 2: 60})
    c = kp_consumer(broker, kp_group, topic)
    try:
        recs = kp_read(c, {0: 70, 1: 70, 2: 70})
        assert sorted(int(r.value) for r in recs) == list(range(180, 210))
        c.commit()
    finally:
        c.close(autocommit=False)
    assert committed(broker, kp_group, topic, range(3)) == {0: 70, 1: 70, 2: 70}


def test_offsets_survive_group_store_compaction(broker, topic_name):
    """More than 10,000 offset records make the broker rewrite its group store (live entries
    only); the latest offsets survive it and a restart, and a deleted group stays deleted."""
    topic = ck_create_topic(broker, topic_name(), partitions=100)
    main, kept, deleted = (f"{name}-{topic}" for name in ("main", "kept", "deleted"))
    admin = ck_admin(broker)
    c = Consumer(group_conf(broker, main))
    try:
        # Group-less commits (allowed while a group has no members), 100 partitions each.
        c.commit(offsets=[TopicPartition(topic, p, 1000 + p) for p in range(100)],
                 asynchronous=False)
        for g, base in ((kept, 7), (deleted, 9)):
            cg = Consumer(group_conf(broker, g))
            try:
                cg.commit(offsets=[TopicPartition(topic, p, base) for p in range(10)],
                          asynchronous=False)
            finally:
                cg.close()
        admin.delete_consumer_groups([deleted], request_timeout=15)[deleted].result(timeout=15)
        for round_ in range(105):
            c.commit(offsets=[TopicPartition(topic, p, round_ * 3 + p) for p in range(100)],
                     asynchronous=False)
    finally:
        c.close()
    want = {p: 104 * 3 + p for p in range(100)}
    wait_until(lambda: broker.log_lines(r"keyed log compacted log=__consumer_offsets"), timeout=10,
               what="the group store to be compacted")
    assert committed(broker, main, topic, range(100)) == want
    for kill in (False, True):
        broker.restart(kill=kill)
        assert committed(broker, main, topic, range(100)) == want, f"kill={kill}"
        assert committed(broker, kept, topic, range(10)) == {p: 7 for p in range(10)}
        assert committed(broker, deleted, topic, range(10)) == \
            {p: OFFSET_INVALID for p in range(10)}, "a deleted group came back"
        listed = admin.list_consumer_groups(request_timeout=15).result(timeout=15)
        names = {g.group_id for g in listed.valid}
        assert main in names and kept in names and deleted not in names, names


def test_group_left_before_restart_is_empty_after_restart(broker, topic_name):
    """Every member left (LeaveGroup) before a clean restart: after the restart the group must
    be Empty, and a new consumer must get its partitions without waiting for a departed
    member's session to time out."""
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    group = f"g-{topic}"
    ck_produce(broker, topic, numbered(10, 2))
    first = Member(broker, topic, group, "first")
    members = [first]
    admin = ck_admin(broker)
    problems = []
    try:
        wait_settled([first], range(2))
        wait_until(lambda: len(first.consumed()) >= 10, what="10 records")
        gone_id = first.member_id
        first.stop()
        d = admin.describe_consumer_groups([group])[group].result(timeout=15)
        assert d.state == ConsumerGroupState.EMPTY and not d.members, (d.state, d.members)

        assert broker.restart() == 0
        d = admin.describe_consumer_groups([group])[group].result(timeout=15)
        if d.state != ConsumerGroupState.EMPTY or d.members:
            problems.append(
                f"after the restart DescribeGroups says {d.state} with members "
                f"{[m.member_id for m in d.members]} (member {gone_id} left before the restart)")

        t0 = time.monotonic()
        second = Member(broker, topic, group, "second")
        members.append(second)
        wait_until(lambda: second.current(), timeout=SESSION_MS / 1000 + 8,
                   what="the new consumer's assignment")
        took = time.monotonic() - t0
        if took > 3:
            problems.append(f"a new consumer got its partitions only {took:.1f}s after it "
                            f"subscribed (the departed member's session timeout: {SESSION_MS} ms)")
        ck_produce(broker, topic, numbered(4, 2, start=10))
        wait_until(lambda: len(second.consumed()) >= 4, what="4 new records")
        assert sorted(int(v) for _p, _o, v in second.consumed()) == [10, 11, 12, 13]
    finally:
        stop_all(members)
    assert not problems, "\n".join(problems)


# --- 4. static membership --------------------------------------------------------------------


def test_static_member_restart_keeps_partitions_without_rebalance(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=4)
    group = f"g-{topic}"
    ck_produce(broker, topic, numbered(40, 4))
    a = Member(broker, topic, group, "a", **{"group.instance.id": "inst-a"})
    members = [a]
    try:
        wait_settled([a], range(4))
        b = Member(broker, topic, group, "b", **{"group.instance.id": "inst-b"})
        members.append(b)
        a_parts, b_parts = wait_settled([a, b], range(4), sizes=[2, 2])
        wait_until(lambda: len(a.consumed()) + len(b.consumed()) >= 40, what="40 records")

        # b closes: librdkafka sends no LeaveGroup for a static member. It comes back at once.
        for restarted, other, name, inst, parts in ((b, a, "b2", "inst-b", b_parts),
                                                    (a, None, "a2", "inst-a", a_parts)):
            other = other or members[-1]  # second round: the restarted b watches a restart
            calls = other.callbacks()
            restarted.stop()
            again = Member(broker, topic, group, name, **{"group.instance.id": inst})
            members.append(again)
            t0 = time.monotonic()
            wait_until(lambda: again.current() == parts, timeout=SESSION_MS / 1000 - 1,
                       what=f"{name} to get its partitions {sorted(parts)} back")
            assert time.monotonic() - t0 < SESSION_MS / 1000
            time.sleep(2.5)  # five heartbeats of the other member
            assert other.callbacks() == calls, \
                f"{other.name} went through a rebalance when static member {inst} came back"
            assert other.current() in (a_parts, b_parts)
            assert again.current() == parts

        live = members[-2:]  # b2 and a2
        before = sum(len(m.consumed()) for m in members)
        ck_produce(broker, topic, numbered(40, 4, start=40))
        wait_until(lambda: sum(len(m.consumed()) for m in members) - before >= 40,
                   what="40 more records")
        time.sleep(0.5)
        everything = [r for m in members for r in m.consumed()]
        assert sorted(int(v) for _p, _o, v in everything) == list(range(80)), \
            "restarted static members resumed exactly at the committed offsets"
        assert sum(len(m.consumed()) for m in live) >= 40

        # A static member that does not come back is removed when its session times out.
        b2, a2 = live
        calls = a2.callbacks()
        b2.stop()
        t0 = time.monotonic()
        wait_until(lambda: a2.current() == frozenset(range(4)), timeout=SESSION_MS / 1000 + 8,
                   what="the static member's partitions to move after its session timeout")
        took = time.monotonic() - t0
        assert SESSION_MS / 1000 - 1.5 <= took <= SESSION_MS / 1000 + 4, \
            f"partitions moved {took:.1f}s after the static member stopped"
        assert a2.callbacks() != calls
    finally:
        stop_all(members)
    for m in members:
        assert m.failure is None, (m.name, m.failure)
    assert_no_double_ownership(members)


def test_restarted_static_member_survives_broker_restart(broker, topic_name):
    """A static member restarted (it rejoined under a new member id without a rebalance), then
    the broker restarted cleanly: the member must carry on, not be fenced as its own ghost."""
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    group = f"g-{topic}"
    ck_produce(broker, topic, numbered(20, 2))
    a = Member(broker, topic, group, "a", **{"group.instance.id": "inst-a"})
    members = [a]
    problems = []
    try:
        wait_settled([a], range(2))
        b = Member(broker, topic, group, "b", **{"group.instance.id": "inst-b"})
        members.append(b)
        a_parts, b_parts = wait_settled([a, b], range(2), sizes=[1, 1])
        wait_until(lambda: len(a.consumed()) + len(b.consumed()) >= 20, what="20 records")
        b.stop()  # static: no LeaveGroup
        b2 = Member(broker, topic, group, "b2", **{"group.instance.id": "inst-b"})
        members.append(b2)
        wait_until(lambda: b2.current() == b_parts, timeout=5, what="b2 to get b's partition")
        calls = a.callbacks()

        assert broker.restart() == 0
        before = sum(len(m.consumed()) for m in members)
        ck_produce(broker, topic, numbered(20, 2, start=20))
        wait_until(lambda: sum(len(m.consumed()) for m in members) - before >= 20,
                   timeout=SESSION_MS / 1000 + 10, what="20 records after the restart")
        time.sleep(1)
        for m in (a, b2):
            fatal = [e for e in m.errors if "FATAL" in e or "fenced" in e]
            if fatal:
                problems.append(f"{m.name} ({m.conf['group.instance.id']}, member id "
                                f"{m.member_id}) got {fatal[0]}; its previous incarnation "
                                f"was member {b.member_id}")
        if b2.current() != b_parts:
            problems.append(f"b2 owns {sorted(b2.current() or [])}, not {sorted(b_parts)}")
        if a.callbacks() != calls:
            problems.append(f"a went through a rebalance: callbacks {calls} -> {a.callbacks()}")
        if not any(p in b_parts for p, _o, _v in b2.consumed()[-10:]):
            problems.append("b2 consumed nothing of its partition after the restart")
    finally:
        stop_all(members)
    assert not problems, "\n".join(problems)


# --- 5. kafka-python and aiokafka group consumers --------------------------------------------


def test_kafka_python_group_consumer_reads_all_and_commits(broker, topic_name):
    from kafka import TopicPartition as KTP

    topic = ck_create_topic(broker, topic_name(), partitions=3)
    ck_produce(broker, topic, numbered(300, 3))
    group = f"kp-{topic}"
    c = kp_consumer(broker, group, topic)
    try:
        recs = kp_read(c, {0: 100, 1: 100, 2: 100})
        assert sorted(int(r.value) for r in recs) == list(range(300))
        c.commit()
        assert {p: c.committed(KTP(topic, p)) for p in range(3)} == {0: 100, 1: 100, 2: 100}
    finally:
        c.close(autocommit=False)
    assert committed(broker, group, topic, range(3)) == {0: 100, 1: 100, 2: 100}


def test_aiokafka_group_consumer_reads_all_and_commits(broker, topic_name):
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    topic = ck_create_topic(broker, topic_name(), partitions=3)
    ck_produce(broker, topic, numbered(300, 3))
    group = f"aio-{topic}"

    async def run():
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
                             fetch_max_wait_ms=100, request_timeout_ms=15000)
        await asyncio.wait_for(c.start(), 20)
        try:
            out = []
            deadline = time.monotonic() + 25
            while len(out) < 300:
                assert time.monotonic() < deadline, f"aiokafka read {len(out)} of 300"
                for recs in (await c.getmany(timeout_ms=200, max_records=1000)).values():
                    out.extend(recs)
            await asyncio.wait_for(c.commit(), 15)
            got = {p: await asyncio.wait_for(c.committed(ATP(topic, p)), 15) for p in range(3)}
            return out, got
        finally:
            await asyncio.wait_for(c.stop(), 20)

    recs, got = asyncio.run(run())
    assert sorted(int(r.value) for r in recs) == list(range(300))
    assert len({(r.partition, r.offset) for r in recs}) == 300
    assert got == {0: 100, 1: 100, 2: 100}
    assert committed(broker, group, topic, range(3)) == {0: 100, 1: 100, 2: 100}
    assert kp_committed(broker, group, topic, range(3)) == {0: 100, 1: 100, 2: 100}


# --- 6. KIP-848 and the AdminClient's view of a group ----------------------------------------


@pytest.mark.broker_config(group_consumer_heartbeat_interval_ms=500,
                           group_consumer_session_timeout_ms=SESSION_MS)
def test_kip848_consumer_protocol_share_and_takeover(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=4)
    group = f"g848-{topic}"
    ck_produce(broker, topic, numbered(40, 4))
    a = Member(broker, topic, group, "a", **KIP848)
    members = [a]
    try:
        wait_settled([a], range(4))
        b = Member(broker, topic, group, "b", **KIP848)
        members.append(b)
        wait_settled([a, b], range(4), sizes=[2, 2])
        ck_produce(broker, topic, numbered(40, 4, start=40))
        wait_until(lambda: len(a.consumed()) + len(b.consumed()) >= 80, what="80 records")
        time.sleep(0.5)
        everything = a.consumed() + b.consumed()
        assert sorted(int(v) for _p, _o, v in everything) == list(range(80)), \
            "every record exactly once while partitions moved between KIP-848 members"
        assert not a.commit_errors and not b.commit_errors, (a.commit_errors, b.commit_errors)

        admin = ck_admin(broker)  # kept referenced until the result arrives
        desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
        assert desc.type == ConsumerGroupType.CONSUMER
        assert desc.state == ConsumerGroupState.STABLE
        assert {m.member_id for m in desc.members} == {a.member_id, b.member_id}
        for m in desc.members:
            mine = a if m.member_id == a.member_id else b
            assert {tp.partition for tp in m.assignment.topic_partitions} == mine.current()

        b.stop()  # leaves the group (member epoch -1)
        t0 = time.monotonic()
        wait_until(lambda: a.current() == frozenset(range(4)), timeout=10,
                   what="the remaining KIP-848 member to take every partition")
        took = time.monotonic() - t0
        n = len(a.consumed())
        ck_produce(broker, topic, numbered(20, 4, start=80))
        wait_until(lambda: len(a.consumed()) - n >= 20, what="20 more records")
        assert sorted(int(v) for _p, _o, v in a.consumed()[n:]) == list(range(80, 100))
        assert took < 5, f"takeover after a leave took {took:.1f}s"

        # A KIP-848 member killed with SIGKILL: its partitions move once its session expires.
        victim = Worker(broker, topic, group, "victim",
                        conf={"client.id": "victim", "group.protocol": "consumer"})
        try:
            def split():
                v = victim.assignment()
                return v and a.current() and not (v & a.current()) and \
                    (v | a.current()) == set(range(4))
            wait_until(split, timeout=15, what="the KIP-848 victim to get partitions")
            t_kill = victim.kill()
        finally:
            if victim.proc.poll() is None:
                victim.kill()
        wait_until(lambda: a.current() == frozenset(range(4)), timeout=SESSION_MS / 1000 + 8,
                   what="partitions of the killed KIP-848 member to move")
        took = time.monotonic() - t_kill
        assert SESSION_MS / 1000 - 1.5 <= took <= SESSION_MS / 1000 + 4, \
            f"partitions moved {took:.1f}s after the kill (session timeout {SESSION_MS} ms)"
    finally:
        stop_all(members)
    for m in members:
        assert m.failure is None, (m.name, m.failure)
    assert_no_double_ownership(members)
    assert committed(broker, group, topic, range(4)) == {p: 25 for p in range(4)}


def test_admin_lists_and_describes_classic_group(broker, topic_name):
    """AdminClient list/describe of a classic group (one dynamic, one static member), its
    offsets through the admin APIs (OffsetFetch, OffsetCommit refused while members are
    active), OffsetDelete and LeaveGroup by instance id (kafka-python's admin)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka.admin import MemberToRemove
    from kafka.errors import GroupSubscribedToTopicError, NoError

    topic = ck_create_topic(broker, topic_name(), partitions=4)
    group = f"g-{topic}"
    ck_produce(broker, topic, numbered(20, 4))
    dynamic = Member(broker, topic, group, "dynamic")
    static = Member(broker, topic, group, "static", **{"group.instance.id": "inst-s"})
    members = [dynamic, static]
    admin = ck_admin(broker)
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        wait_settled(members, range(4), sizes=[2, 2])
        wait_until(lambda: all(m.member_id for m in members) and
                   sum(len(m.consumed()) for m in members) >= 20, what="20 records")
        listed = admin.list_consumer_groups(request_timeout=15).result(timeout=15)
        assert not listed.errors, listed.errors
        [mine] = [g for g in listed.valid if g.group_id == group]
        assert mine.state == ConsumerGroupState.STABLE
        assert not mine.is_simple_consumer_group
        assert mine.type in (ConsumerGroupType.CLASSIC, ConsumerGroupType.UNKNOWN), mine.type
        stable = admin.list_consumer_groups(
            states={ConsumerGroupState.STABLE}, request_timeout=15).result(timeout=15)
        assert group in {g.group_id for g in stable.valid}

        desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        assert desc.coordinator.port == broker.port
        by_id = {m.member_id: m for m in members}
        assert {m.member_id for m in desc.members} == set(by_id)
        for d in desc.members:
            assert d.client_id == by_id[d.member_id].name
            assert d.group_instance_id == by_id[d.member_id].conf.get("group.instance.id")
            assert d.host  # the client's address
            tps = d.assignment.topic_partitions
            assert {tp.topic for tp in tps} == {topic}
            assert {tp.partition for tp in tps} == by_id[d.member_id].current()
        missing = admin.describe_consumer_groups(["no-such-group"])["no-such-group"]
        assert missing.result(timeout=15).state == ConsumerGroupState.DEAD

        # Offsets through the admin APIs.
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                                        for p in range(4)])]
        got = admin.list_consumer_group_offsets(request)[group].result(timeout=15)
        assert {tp.partition: tp.offset for tp in got.topic_partitions} == \
            {p: 5 for p in range(4)}
        alter = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])]
        got = admin.alter_consumer_group_offsets(alter)[group].result(timeout=15)
        assert got.topic_partitions[0].error is not None, "altered offsets of an active group"
        assert kadmin.delete_group_offsets(group, [KTP(topic, 0)]) == \
            {KTP(topic, 0): GroupSubscribedToTopicError}

        # The static member stops (no LeaveGroup); an operator removes it by instance id.
        calls = dynamic.callbacks()
        static.stop()
        t0 = time.monotonic()
        assert kadmin.remove_group_members(group, [MemberToRemove(group_instance_id="inst-s")]) \
            == {"inst-s": NoError}
        wait_until(lambda: dynamic.current() == frozenset(range(4)), timeout=5,
                   what="the dynamic member to get every partition")
        assert time.monotonic() - t0 < SESSION_MS / 1000 - 1, "not removed at once"
        assert dynamic.callbacks() != calls
    finally:
        stop_all(members)
    for m in members:
        assert m.failure is None, (m.name, m.failure)
    assert_no_double_ownership(members)

    # No members left, offsets remain: the group is Empty.
    def empty():
        d = admin.describe_consumer_groups([group])[group].result(timeout=15)
        return d.state == ConsumerGroupState.EMPTY and not d.members and d
    wait_until(empty, timeout=10, what="the group to be Empty")
    listed = admin.list_consumer_groups(request_timeout=15).result(timeout=15)
    assert [g.state for g in listed.valid if g.group_id == group] == [ConsumerGroupState.EMPTY]
    alter = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 1, 3, metadata="m3")])]
    got = admin.alter_consumer_group_offsets(alter)[group].result(timeout=15)
    assert [(tp.partition, tp.offset, tp.error) for tp in got.topic_partitions] == [(1, 3, None)]
    assert kadmin.delete_group_offsets(group, [KTP(topic, 0)]) == {KTP(topic, 0): NoError}
    kadmin.close()
    got = admin.list_consumer_group_offsets(request)[group].result(timeout=15)
    assert [(tp.partition, tp.offset, tp.metadata) for tp in got.topic_partitions] == \
        [(0, OFFSET_INVALID, None), (1, 3, "m3"), (2, 5, None), (3, 5, None)]


# --- 7. churn under a continuous producer ----------------------------------------------------


@pytest.mark.timeout(90)
def test_churn_every_record_consumed_at_least_once(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=6)
    group = f"churn-{topic}"
    produced: list[int] = []
    produce_errors: list[str] = []
    stop_producing = threading.Event()

    def produce():
        p = Producer(ck_conf(broker, **{"linger.ms": 5, "acks": "all"}))
        n = 0

        def report(err, msg):
            if err is not None:
                produce_errors.append(str(err))
            else:
                produced.append(int(msg.value()))

        deadline = time.monotonic() + 30
        while not stop_producing.is_set() and time.monotonic() < deadline:
            for _ in range(10):
                p.produce(topic, value=str(n).encode(), partition=n % 6, on_delivery=report)
                n += 1
            p.poll(0)
            time.sleep(0.02)
        assert p.flush(20) == 0

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    rng = random.Random(848)
    everyone: list[Member] = []
    active: list[Member] = []
    try:
        t_end = time.monotonic() + 18
        step = 0
        while time.monotonic() < t_end and step < 40:
            step += 1
            if len(active) < 1 or (len(active) < 3 and rng.random() < 0.55):
                m = Member(broker, topic, group, f"c{step}")
                everyone.append(m)
                active.append(m)
            else:
                active.pop(rng.randrange(len(active))).stop()
            time.sleep(rng.uniform(0.8, 2.0))
        stop_producing.set()
        producer.join(25)
        assert not producer.is_alive(), "the producer did not finish"
        assert not produce_errors, produce_errors[:5]
        for m in active:
            m.stop()
        active = []
        high = ends(broker, topic, range(6))
        assert sum(high.values()) == len(produced)

        final = Member(broker, topic, group, "final")
        everyone.append(final)
        active.append(final)

        def drained():
            seen = {(p, o) for m in everyone for p, o, _v in m.consumed()}
            return all((p, high[p] - 1) in seen for p in range(6) if high[p])
        wait_until(drained, timeout=25, what="the final consumer to drain the group")
        final.stop()
        active = []
    finally:
        stop_producing.set()
        stop_all(everyone)
    for m in everyone:
        assert m.failure is None, (m.name, m.failure)
    assert_no_double_ownership(everyone)
    seen = [int(v) for m in everyone for _p, _o, v in m.consumed()]
    missing = set(produced) - set(seen)
    assert not missing, \
        f"{len(missing)} produced records never consumed, e.g. {sorted(missing)[:10]}"
    assert committed(broker, group, topic, range(6)) == high
    joins = len(everyone)
    dups = len(seen) - len(set(seen))
    commit_errors = [e for m in everyone for e in m.commit_errors]
    print(f"churn: {len(produced)} records, {joins} consumers, {dups} duplicates, "
          f"{len(commit_errors)} failed commits")
    if not commit_errors and not any(m.lost_calls for m in everyone):
        # Every member committed what it processed before giving a partition up.
        assert dups == 0, f"{dups} records consumed twice although every commit succeeded"
    assert joins >= 5


# --- 8. the trib group CLI -------------------------------------------------------------------


def trib(broker, *args, ok=True, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = [str(broker.bin), "group", *args, "-b", broker.bootstrap]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if ok:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def describe_rows(out: str, topic: str) -> dict[int, tuple]:
    """partition -> (committed, end, lag, member) from `trib group describe`."""
    rows = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) == 6 and f[0] == topic:
            rows[int(f[1])] = (f[2], f[3], f[4], f[5])
    return rows


def test_trib_group_cli(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=3)
    group = f"cli-{topic}"
    # 30 records per partition; record i of a partition has timestamp TS0 + i s.
    ck_produce(broker, topic, [{"value": f"{p}:{i}".encode(), "partition": p,
                                "timestamp": TS0 + i * 1000}
                               for i in range(30) for p in range(3)])
    m = Member(broker, topic, group, "cli-member", commit=False)
    started = [m]
    try:
        cli_checks(broker, topic, group, m, started)
    finally:
        stop_all(started)
    for member in started:
        assert member.failure is None, (member.name, member.failure)


def cli_checks(broker, topic, group, m, started):
    wait_settled([m], range(3))
    wait_until(lambda: m.member_id and len(m.consumed()) >= 90, what="90 records")
    m.commit_now({0: 20, 1: 25, 2: 30})

    out = trib(broker, "list").stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [group, "Stable", "consumer", "1"] in rows, out

    out = trib(broker, "describe", group).stdout
    assert f"group {group}: Stable, 1 member(s)" in out, out
    assert m.member_id in out
    assert describe_rows(out, topic) == {
        0: ("20", "30", "10", m.member_id),
        1: ("25", "30", "5", m.member_id),
        2: ("30", "30", "0", m.member_id),
    }, out
    assert describe_rows(trib(broker, "describe", group, "-t", topic).stdout, topic)[0][:3] == \
        ("20", "30", "10")

    # Refused while the member is active; nothing changes.
    r = trib(broker, "reset-offsets", group, "-t", topic, "--to-earliest", "--execute", ok=False)
    assert r.returncode != 0 and "active member" in r.stderr, (r.stdout, r.stderr)
    r = trib(broker, "delete", group, ok=False)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert committed(broker, group, topic, range(3)) == {0: 20, 1: 25, 2: 30}
    assert group in trib(broker, "list").stdout

    m.stop()
    wait_until(lambda: f"group {group}: Empty, 0 member(s)" in
               trib(broker, "describe", group).stdout, timeout=10, what="the group to be Empty")

    def reset(*how):
        return trib(broker, "reset-offsets", group, "-t", topic, *how).stdout

    assert "dry run" in reset("--to-earliest")
    assert committed(broker, group, topic, range(3)) == {0: 20, 1: 25, 2: 30}, "dry run changed"
    reset("--to-earliest", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 0, 1: 0, 2: 0}
    reset("--shift-by", "-5", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 0, 1: 0, 2: 0}, "clamped at 0"
    reset("--to-latest", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 30, 1: 30, 2: 30}
    reset("--shift-by", "-5", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 25, 1: 25, 2: 25}
    reset("--to-datetime", str(TS0 + 12_000), "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 12, 1: 12, 2: 12}
    rfc = datetime.fromtimestamp((TS0 + 12_500) / 1000, timezone.utc)
    reset("--to-datetime", rfc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 13, 1: 13, 2: 13}
    reset("--to-offset", "7", "--execute")
    assert committed(broker, group, topic, range(3)) == {0: 7, 1: 7, 2: 7}
    rows = describe_rows(trib(broker, "describe", group).stdout, topic)
    assert rows == {p: ("7", "30", "23", "-") for p in range(3)}, rows

    # A new member resumes at the reset offsets.
    m2 = Member(broker, topic, group, "after-reset")
    started.append(m2)
    wait_until(lambda: len(m2.consumed()) >= 69, what="69 records after the reset")
    time.sleep(0.3)
    assert {p: min(o) for p, o in by_partition(m2.consumed()).items()} == {0: 7, 1: 7, 2: 7}
    assert len(m2.consumed()) == 69
    m2.stop()

    out = trib(broker, "delete", group).stdout
    assert f"deleted group {group}" in out
    assert group not in trib(broker, "list").stdout
    assert committed(broker, group, topic, range(3)) == {p: OFFSET_INVALID for p in range(3)}
    r = trib(broker, "delete", group, ok=False)
    assert r.returncode != 0, "deleting a missing group must fail"


def test_trib_group_cli_sees_kip848_members(broker, topic_name):
    """`trib group list/describe` show the members of a KIP-848 (group.protocol=consumer)
    group, and reset-offsets refuses up front while one is active, as for classic groups."""
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    group = f"cli848-{topic}"
    ck_produce(broker, topic, numbered(20, 2))
    m = Member(broker, topic, group, "kip848-member", **KIP848)
    problems = []
    try:
        wait_until(lambda: m.member_id and len(m.consumed()) >= 20, what="20 records")
        out = trib(broker, "list").stdout
        rows = [line.split("\t") for line in out.splitlines()]
        if [group, "Stable", "consumer", "1"] not in rows:
            problems.append(f"trib group list:\n{out}")
        out = trib(broker, "describe", group).stdout
        if f"group {group}: Stable, 1 member(s)" not in out or m.member_id not in out:
            problems.append(f"trib group describe (member {m.member_id}):\n{out}")
        r = trib(broker, "reset-offsets", group, "-t", topic, "--to-earliest", ok=False)
        if r.returncode == 0 or "active member" not in r.stderr:
            problems.append(f"trib group reset-offsets (dry run) exited {r.returncode}:\n"
                            f"{r.stdout}{r.stderr}")
        assert committed(broker, group, topic, range(2)) == {0: 10, 1: 10}
    finally:
        stop_all([m])
    assert not problems, "\n".join(problems)
