//! Control plane: an in-process cluster of three voters (us-east-1, eu-west-1, witness) on
//! 127.0.0.1, every link through one shared `LinkFaults` hook. Short timeouts: heartbeat
//! 50 ms, election 150–300 ms, lease 600 ms. Every wait is bounded.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pangolin::config::{ControlSection, VoterSection};
use pangolin::control::{
    CatchUp, ClientError, ControlClient, ControlPlane, ControlPlaneOptions, ControlState,
    LeaseGrant, LinkFaults, LinkMode, NoCatchUp, NodeId, WriteLease, WriteLeaseConfig,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const HEARTBEAT_MS: u64 = 100;
const ELECTION_MIN_MS: u64 = 300;
const ELECTION_MAX_MS: u64 = 600;
const LEASE_MS: u64 = 1200;
const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
/// Fault-hook ids of the two catalog nodes (voters are 1..=3).
const US_NODE: NodeId = 101;
const EU_NODE: NodeId = 102;

/// Bound on electing a new leader after losing the old one.
fn election_bound() -> Duration {
    Duration::from_millis(ELECTION_MAX_MS * 3 + HEARTBEAT_MS * 4)
}

struct Cluster {
    _dir: tempfile::TempDir,
    faults: Arc<LinkFaults>,
    sections: Vec<ControlSection>,
    voters: Vec<Option<ControlPlane>>,
    root: CancellationToken,
    catch_up: Arc<dyn CatchUp>,
}

fn section_for(
    voters: &[VoterSection],
    id: NodeId,
    raft_dir: PathBuf,
    auto_failover_after_ms: u64,
) -> ControlSection {
    let me = voters.iter().find(|v| v.id == id).expect("voter");
    ControlSection {
        voter_id: Some(id),
        listen: Some(me.address.clone()),
        raft_dir: Some(raft_dir),
        voters: voters.to_vec(),
        initial_primary: US.into(),
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_min_ms: ELECTION_MIN_MS,
        election_timeout_max_ms: ELECTION_MAX_MS,
        lease_ms: LEASE_MS,
        auto_failover_after_ms,
        max_failover_lag_records: 100,
    }
}

/// Polls `cond` every 10 ms until it yields `Some`, at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks `cond` every 5 ms until it yields `Some`, at most `limit`.
async fn wait_until<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Cluster {
    async fn start(auto_failover_after_ms: u64) -> Cluster {
        Self::start_with_catch_up(auto_failover_after_ms, Arc::new(NoCatchUp)).await
    }

    async fn start_with_catch_up(
        auto_failover_after_ms: u64,
        catch_up: Arc<dyn CatchUp>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let regions = [US, EU, "witness"];
        let mut listeners = Vec::new();
        let mut voters = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            voters.push(VoterSection {
                id: i as u64 + 1,
                region: region.to_string(),
                address: l.local_addr().expect("addr").to_string(),
            });
            listeners.push(l);
        }
        let sections: Vec<ControlSection> = voters
            .iter()
            .map(|v| {
                section_for(
                    &voters,
                    v.id,
                    dir.path().join(format!("voter-{}", v.id)),
                    auto_failover_after_ms,
                )
            })
            .collect();
        let mut cluster = Cluster {
            _dir: dir,
            faults: LinkFaults::new(),
            sections,
            voters: Vec::new(),
            root: CancellationToken::new(),
            catch_up,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let cp = cluster.start_voter(i, l).await;
            cluster.voters.push(Some(cp));
        }
        cluster
    }

    async fn start_voter(&self, i: usize, listener: TcpListener) -> ControlPlane {
        let options = ControlPlaneOptions {
            listener: Some(listener),
            faults: self.faults.clone(),
            catch_up: self.catch_up.clone(),
            ..ControlPlaneOptions::default()
        };
        ControlPlane::start_with(&self.sections[i], options, self.root.clone())
            .await
            .expect("start voter")
    }

    fn addr(&self, i: usize) -> String {
        self.sections[i].listen.clone().expect("listen")
    }

    /// Shuts voter `i` down (its raft dir stays).
    async fn kill(&mut self, i: usize) {
        if let Some(v) = self.voters[i].take() {
            v.shutdown().await;
        }
    }

    /// Restarts voter `i` from its raft dir on the same address.
    async fn restart(&mut self, i: usize) {
        let addr = self.addr(i);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebinding {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let cp = self.start_voter(i, listener).await;
        self.voters[i] = Some(cp);
    }

    fn voter(&self, i: usize) -> &ControlPlane {
        self.voters[i].as_ref().expect("voter is running")
    }

    /// A voter among `among` that leads and that every other voter of `among` follows.
    fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let leader = among.iter().copied().find(|&i| {
            self.voters[i].as_ref().is_some_and(|v| {
                let m = v.raft().metrics().borrow().clone();
                m.state.is_leader() && m.current_leader == Some(v.id())
            })
        })?;
        let id = self.voter(leader).id();
        among
            .iter()
            .all(|&i| {
                self.voters[i]
                    .as_ref()
                    .is_some_and(|v| v.current_leader() == Some(id))
            })
            .then_some(leader)
    }

    async fn wait_leader(&self, among: &[usize], limit: Duration) -> usize {
        wait_until("an agreed leader", limit, || self.agreed_leader(among)).await
    }

    /// Waits for the leader to have proposed the initial state.
    async fn wait_initialized(&self) -> ControlState {
        let client = &self.client(None);
        wait_for(
            "an initialised state",
            Duration::from_secs(5),
            || async move { client.state().await.ok().filter(|s| s.initialized) },
        )
        .await
    }

    /// A client of all voters; with `node` its links pass the fault hook as that id.
    fn client(&self, node: Option<NodeId>) -> ControlClient {
        let c = ControlClient::from_section(&self.sections[0])
            .expect("client")
            .with_timeout(Duration::from_millis(300))
            .with_admin_timeout(Duration::from_secs(10));
        match node {
            Some(id) => c.with_faults(self.faults.clone(), id),
            None => c,
        }
    }

    fn write_lease(&self, region: &str, node: NodeId) -> WriteLease {
        WriteLease::spawn(
            self.client(Some(node)),
            WriteLeaseConfig::new(region, format!("{region}-node"), LEASE_MS),
            &self.root,
        )
    }

    async fn stop(mut self) {
        for i in 0..self.voters.len() {
            self.kill(i).await;
        }
        self.root.cancel();
    }
}

/// GET /control/v1/state straight from voter `addr` (no client failover).
async fn state_from(http: &reqwest::Client, addr: &str) -> Result<ControlState, String> {
    let res = http
        .get(format!("http://{addr}/control/v1/state"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!(
            "{}: {}",
            res.status(),
            res.text().await.unwrap_or_default()
        ));
    }
    res.json().await.map_err(|e| e.to_string())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

fn collect(rx: &mut broadcast::Receiver<LeaseGrant>, into: &mut Vec<LeaseGrant>) {
    while let Ok(g) = rx.try_recv() {
        into.push(g);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_is_elected_and_every_voter_answers_the_same_state() {
    let cluster = Cluster::start(0).await;
    let t0 = Instant::now();
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    println!(
        "first leader: voter {} after {:?}",
        leader + 1,
        t0.elapsed()
    );
    let state = cluster.wait_initialized().await;
    assert_eq!(state.epoch, 1);
    assert_eq!(state.primary.as_deref(), Some(US));
    assert_eq!(state.regions.len(), 2, "witness is not a catalog region");

    let http = http();
    for i in 0..3 {
        let s = state_from(&http, &cluster.addr(i)).await.expect("state");
        assert_eq!((s.epoch, s.primary.as_deref()), (1, Some(US)), "voter {i}");
        assert_eq!(s, state, "voter {i} answers the leader's state");
    }
    // Writes through any voter (followers forward to the leader).
    for i in 0..3 {
        let res = http
            .post(format!("http://{}/control/v1/lease", cluster.addr(i)))
            .json(&serde_json::json!({"region": US, "epoch": 1, "holder": format!("n{i}")}))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("lease request");
        assert!(res.status().is_success(), "voter {i}: {}", res.status());
        let answer: serde_json::Value = res.json().await.expect("json");
        assert_eq!(answer["granted"], true, "voter {i}: {answer}");
        assert_eq!(answer["lease_ms"], LEASE_MS);
    }
    let res = http
        .post(format!("http://{}/control/v1/lease", cluster.addr(1)))
        .json(&serde_json::json!({"region": EU, "epoch": 1, "holder": "x"}))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("lease request");
    let answer: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        answer["granted"], false,
        "a secondary gets no lease: {answer}"
    );
    assert_eq!(answer["primary"], US);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leader_is_replaced_within_the_bound_and_state_survives() {
    let mut cluster = Cluster::start(0).await;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    // Change the state so there is something to survive.
    let client = cluster.client(None);
    let after = client
        .switchover(EU, "test", "before the kill")
        .await
        .expect("switchover");
    assert_eq!((after.epoch, after.primary.as_deref()), (2, Some(EU)));

    let killed_at = Instant::now();
    cluster.kill(leader).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = cluster
        .wait_leader(&survivors, election_bound() + Duration::from_secs(2))
        .await;
    let took = killed_at.elapsed();
    println!(
        "leader kill: voter {} -> voter {} in {took:?} (bound {:?})",
        leader + 1,
        new_leader + 1,
        election_bound()
    );
    assert!(took <= election_bound(), "new leader after {took:?}");

    let state = client.state().await.expect("state after the kill");
    assert_eq!((state.epoch, state.primary.as_deref()), (2, Some(EU)));
    assert_eq!(state.history.len(), 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_is_replaced_within_the_bound_and_rejoins() {
    let cluster = Cluster::start(0).await;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let leader_id = cluster.voter(leader).id();

    let isolated_at = Instant::now();
    cluster.faults.partition([leader_id]);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = cluster
        .wait_leader(&others, election_bound() + Duration::from_secs(2))
        .await;
    let took = isolated_at.elapsed();
    println!(
        "leader isolation: voter {} -> voter {} in {took:?} (bound {:?})",
        leader + 1,
        new_leader + 1,
        election_bound()
    );
    assert!(took <= election_bound(), "new leader after {took:?}");

    // The majority side serves reads and writes; the isolated voter cannot.
    let http = http();
    let s = state_from(&http, &cluster.addr(new_leader))
        .await
        .expect("state from the new leader");
    assert_eq!((s.epoch, s.primary.as_deref()), (1, Some(US)));
    assert!(
        state_from(&http, &cluster.addr(leader)).await.is_err(),
        "an isolated voter must not answer a stale state"
    );
    let client = cluster.client(None);
    let after = client
        .switchover(EU, "test", "during the partition")
        .await
        .expect("switchover on the majority side");
    assert_eq!(after.epoch, 2);

    // Healed: the old leader follows and catches up.
    cluster.faults.heal();
    let all = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    println!("after heal: leader voter {}", all + 1);
    let old = cluster.voter(leader);
    wait_until("the old leader to catch up", Duration::from_secs(5), || {
        (old.local_state().epoch == 2).then_some(())
    })
    .await;
    let s = state_from(&http, &cluster.addr(leader))
        .await
        .expect("state");
    assert_eq!((s.epoch, s.primary.as_deref()), (2, Some(EU)));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_voter_recovers_from_disk_and_catches_up() {
    let mut cluster = Cluster::start(0).await;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let client = cluster.client(None);

    // Some leases, then the follower goes away.
    for _ in 0..5 {
        let a = client.renew_lease(US, 1, "n1").await.expect("lease");
        assert!(a.granted, "{a:?}");
    }
    let before = cluster.voter(follower).local_state();
    cluster.kill(follower).await;

    // While it is down: a switchover, then a snapshot and a purged log on the leader, so
    // the restarted follower must take the snapshot.
    client
        .switchover(EU, "test", "while a voter is down")
        .await
        .expect("switchover");
    for _ in 0..5 {
        let a = client.renew_lease(EU, 2, "n2").await.expect("lease");
        assert!(a.granted, "{a:?}");
    }
    // Snapshot and purge on both running voters, so whichever leads must send a snapshot.
    let mut applied = u64::MAX;
    for i in (0..3).filter(|&i| i != follower) {
        let raft = cluster.voter(i).raft().clone();
        raft.trigger().snapshot().await.expect("snapshot");
        let index = wait_until("a snapshot", Duration::from_secs(5), || {
            let m = raft.metrics().borrow().clone();
            m.snapshot
                .filter(|s| Some(*s) == m.last_applied)
                .map(|s| s.index)
        })
        .await;
        raft.trigger().purge_log(index).await.expect("purge");
        wait_until("the purge", Duration::from_secs(5), || {
            raft.metrics().borrow().purged.filter(|p| p.index >= index)
        })
        .await;
        applied = applied.min(index);
    }

    // The follower restarts from its own disk (its earlier state), then catches up.
    cluster.restart(follower).await;
    let restarted = cluster.voter(follower);
    assert!(
        restarted.local_state().epoch >= before.epoch,
        "restarted from disk"
    );
    wait_until(
        "the restarted voter to catch up",
        Duration::from_secs(5),
        || {
            let s = restarted.local_state();
            (s.epoch == 2 && s.primary.as_deref() == Some(EU)).then_some(())
        },
    )
    .await;
    // It could only get there through the leader's snapshot (the log before it is purged).
    wait_until("the installed snapshot", Duration::from_secs(5), || {
        restarted
            .raft()
            .metrics()
            .borrow()
            .snapshot
            .filter(|s| s.index >= applied)
    })
    .await;
    let leader_state = client.state().await.expect("state");
    wait_until("identical states", Duration::from_secs(5), || {
        (cluster.voter(follower).local_state() == leader_state).then_some(())
    })
    .await;

    // Whole cluster restart: every voter recovers snapshot + log from disk.
    for i in 0..3 {
        cluster.kill(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    for i in 0..3 {
        let s = cluster.voter(i).local_state();
        assert!(s.initialized, "voter {i} recovered its state from disk");
    }
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    let s = client.state().await.expect("state after full restart");
    assert_eq!((s.epoch, s.primary.as_deref()), (2, Some(EU)));
    assert_eq!(s.history, leader_state.history);
    cluster.stop().await;
}

/// Samples both leases every 2 ms; counts the moments where both are valid.
fn spawn_checker(
    a: Arc<WriteLease>,
    b: Arc<WriteLease>,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<usize>, Arc<AtomicUsize>) {
    let samples = Arc::new(AtomicUsize::new(0));
    let counted = samples.clone();
    let task = tokio::spawn(async move {
        let mut violations = 0;
        while !stop.load(Ordering::Relaxed) {
            let la = a.held_lease();
            let lb = b.held_lease();
            let now = Instant::now();
            if let (Some((ea, ua)), Some((eb, ub))) = (la, lb) {
                if ua > now && ub > now {
                    violations += 1;
                    eprintln!("both leases valid: {US} epoch {ea}, {EU} epoch {eb}");
                }
            }
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        violations
    });
    (task, samples)
}

fn assert_disjoint(us: &[LeaseGrant], eu: &[LeaseGrant]) {
    for a in us {
        for b in eu {
            let overlap = a.received_at < b.valid_until && b.received_at < a.valid_until;
            assert!(!overlap, "overlapping grants: {a:?} and {b:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_leases_are_never_valid_at_once_through_switchover_failover_and_leader_kill() {
    let mut cluster = Cluster::start(0).await;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let us = Arc::new(cluster.write_lease(US, US_NODE));
    let eu = Arc::new(cluster.write_lease(EU, EU_NODE));
    let mut us_rx = us.subscribe_grants();
    let mut eu_rx = eu.subscribe_grants();
    let stop = Arc::new(AtomicBool::new(false));
    let (checker, samples) = spawn_checker(us.clone(), eu.clone(), stop.clone());
    let (mut us_grants, mut eu_grants) = (Vec::new(), Vec::new());

    let lease_wait = Duration::from_secs(5);
    let e1 = wait_until("the us-east-1 lease", lease_wait, || {
        us.current().map(|(e, _)| e)
    })
    .await;
    assert_eq!(e1, 1);
    assert!(eu.current().is_none());
    // Steady state: renewals every lease/3 while eu-west-1 keeps being refused.
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    assert!(us.current().is_some() && eu.current().is_none());

    // Planned switchover.
    let client = cluster.client(None);
    let t = Instant::now();
    let s = client
        .switchover(EU, "operator", "planned maintenance")
        .await
        .expect("switchover");
    println!("switchover took {:?}", t.elapsed());
    assert_eq!((s.epoch, s.primary.as_deref()), (e1 + 1, Some(EU)));
    let e2 = wait_until("the eu-west-1 lease", lease_wait, || {
        eu.current().map(|(e, _)| e)
    })
    .await;
    assert_eq!(e2, e1 + 1, "eu-west-1 is granted the next epoch");
    assert!(us.current().is_none());
    let known = us.known();
    wait_until("us-east-1 to learn the new primary", lease_wait, || {
        (known.borrow().primary.as_deref() == Some(EU)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    assert!(eu.current().is_some() && us.current().is_none());

    // Unplanned failover back.
    let t = Instant::now();
    let s = client
        .failover(US, false, "operator", "eu-west-1 is sick")
        .await
        .expect("failover");
    println!("failover took {:?}", t.elapsed());
    assert_eq!((s.epoch, s.primary.as_deref()), (e1 + 2, Some(US)));
    wait_until("the us-east-1 lease at epoch 3", lease_wait, || {
        us.current().filter(|(e, _)| *e == e1 + 2)
    })
    .await;

    // Leader kill: the lease may lapse, then comes back with the same epoch.
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    let killed_at = Instant::now();
    cluster.kill(leader).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cluster
        .wait_leader(&survivors, election_bound() + Duration::from_secs(2))
        .await;
    println!(
        "leader kill with leases running: new leader after {:?}",
        killed_at.elapsed()
    );
    let renewed = wait_until("a renewal after the leader kill", lease_wait, || {
        collect(&mut us_rx, &mut us_grants);
        us_grants
            .iter()
            .rev()
            .find(|g| g.received_at > killed_at)
            .copied()
    })
    .await;
    assert_eq!(renewed.epoch, e1 + 2);
    println!(
        "us-east-1 renewed {:?} after the leader kill",
        renewed.received_at - killed_at
    );

    stop.store(true, Ordering::Relaxed);
    let violations = checker.await.expect("checker");
    collect(&mut us_rx, &mut us_grants);
    collect(&mut eu_rx, &mut eu_grants);
    println!(
        "checker: {} samples, {} us-east-1 grants, {} eu-west-1 grants",
        samples.load(Ordering::Relaxed),
        us_grants.len(),
        eu_grants.len()
    );
    assert_eq!(violations, 0, "two valid leases at once");
    assert!(!eu_grants.is_empty() && !us_grants.is_empty());
    assert_disjoint(&us_grants, &eu_grants);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_primary_loses_its_lease_and_failover_waits_for_expiry() {
    let cluster = Cluster::start(0).await;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let us = cluster.write_lease(US, US_NODE);
    let eu = cluster.write_lease(EU, EU_NODE);
    let mut us_rx = us.subscribe_grants();
    let mut eu_rx = eu.subscribe_grants();
    wait_until("the us-east-1 lease", Duration::from_secs(5), || {
        us.current()
    })
    .await;

    // Cut the us-east-1 catalog node off from every voter.
    let cut_at = Instant::now();
    cluster.faults.partition([US_NODE]);
    let lapsed = wait_until("the lease to lapse", Duration::from_secs(3), || {
        us.current().is_none().then(|| cut_at.elapsed())
    })
    .await;
    println!("partitioned primary lost its lease after {lapsed:?} (lease {LEASE_MS} ms)");
    assert!(
        lapsed <= Duration::from_millis(LEASE_MS),
        "lapsed after {lapsed:?}"
    );
    let mut us_grants = Vec::new();
    collect(&mut us_rx, &mut us_grants);
    // Renewals fail: no grant arrives while cut off (allow one in flight at the cut).
    tokio::time::sleep(Duration::from_millis(LEASE_MS / 2)).await;
    collect(&mut us_rx, &mut us_grants);
    assert!(
        us_grants
            .iter()
            .all(|g| g.received_at < cut_at + Duration::from_millis(400)),
        "no renewal succeeds behind the partition"
    );
    let old_until = us.held_lease().map(|(_, u)| u).expect("held a lease");
    assert!(us.current().is_none());

    let client = cluster.client(None);
    let t = Instant::now();
    let s = client
        .failover(EU, false, "operator", "us-east-1 unreachable")
        .await
        .expect("failover");
    println!("failover took {:?}", t.elapsed());
    assert_eq!((s.epoch, s.primary.as_deref()), (2, Some(EU)));
    let first = wait_until("the eu-west-1 lease", Duration::from_secs(5), || {
        eu_rx.try_recv().ok()
    })
    .await;
    assert_eq!(first.epoch, 2);
    assert!(
        first.received_at > old_until,
        "eu-west-1 got its lease {:?} before the old one expired",
        old_until - first.received_at
    );
    let event = s.history.last().expect("history");
    assert!(!event.planned);
    assert_eq!(event.from.as_deref(), Some(US));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_records_switchovers_and_unknown_regions_are_refused() {
    let cluster = Cluster::start(0).await;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let client = cluster.client(None);

    let s = client
        .switchover(EU, "alice", "drill")
        .await
        .expect("switchover");
    let ev = s.history.last().expect("one event");
    assert_eq!(ev.from.as_deref(), Some(US));
    assert_eq!(ev.to, EU);
    assert_eq!(ev.epoch, 2);
    assert!(ev.planned);
    assert_eq!(ev.actor, "alice");
    assert_eq!(ev.reason, "drill");

    let s = client
        .failover(US, true, "bob", "region outage")
        .await
        .expect("failover");
    assert_eq!(s.history.len(), 2);
    let ev = &s.history[1];
    assert_eq!(
        (
            ev.from.as_deref(),
            ev.to.as_str(),
            ev.epoch,
            ev.planned,
            ev.forced
        ),
        (Some(EU), US, 3, false, true)
    );
    assert_eq!(ev.actor, "bob");

    // Retrying a switchover to the current primary is a no-op.
    let same = client.switchover(US, "bob", "again").await.expect("no-op");
    assert_eq!(same.epoch, 3);

    for bad in ["mars-1", "witness"] {
        let err = client
            .failover(bad, false, "eve", "typo")
            .await
            .expect_err("unknown region");
        assert_eq!(err.status(), Some(400), "{err}");
    }
    // The error body is the Iceberg error model, from a follower (forwarded) too.
    let http = http();
    for i in 0..3 {
        let res = http
            .post(format!("http://{}/control/v1/failover", cluster.addr(i)))
            .json(&serde_json::json!({"to": "mars-1", "actor": "eve"}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status().as_u16(), 400);
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["type"], "BadRequestException");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mars-1")));
    }
    let s = client.state().await.expect("state");
    assert_eq!(
        (s.epoch, s.history.len()),
        (3, 2),
        "refusals changed nothing"
    );

    // A slow voter and a dropped link: the client gives up on each within its timeout and
    // gets its answer from the next voter.
    const SLOW_CLIENT: NodeId = 200;
    cluster
        .faults
        .set_link(SLOW_CLIENT, 1, LinkMode::Delay { ms: 2000 });
    cluster.faults.set_link(SLOW_CLIENT, 2, LinkMode::Drop);
    let slow = cluster.client(Some(SLOW_CLIENT));
    let t = Instant::now();
    let s = slow.state().await.expect("state through voter 3");
    assert_eq!(s.epoch, 3);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    cluster.faults.set_link(SLOW_CLIENT, 3, LinkMode::Drop);
    let err = slow.state().await.expect_err("every link is down");
    assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_without_lease_is_failed_over_automatically() {
    const AFTER_MS: u64 = 1000;
    let cluster = Cluster::start(AFTER_MS).await;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let us = cluster.write_lease(US, US_NODE);
    wait_until("the us-east-1 lease", Duration::from_secs(5), || {
        us.current()
    })
    .await;
    // Healthy for a while: no failover while the lease is renewed.
    tokio::time::sleep(Duration::from_millis(AFTER_MS + 500)).await;
    let client = &cluster.client(None);
    assert_eq!(client.state().await.expect("state").epoch, 1);

    // The primary's node stops; eu-west-1 has no node running yet: no target, no failover.
    us.stop().await;
    tokio::time::sleep(Duration::from_millis(AFTER_MS + LEASE_MS + 500)).await;
    let s = client.state().await.expect("state");
    assert_eq!(
        (s.epoch, s.primary.as_deref()),
        (1, Some(US)),
        "no failover to a region without live nodes"
    );

    // eu-west-1's node comes up (and polls for a lease): the failover follows.
    let stopped_at = Instant::now();
    let eu = cluster.write_lease(EU, EU_NODE);
    let s = wait_for(
        "the automatic failover",
        Duration::from_millis(LEASE_MS + 3000),
        || async move {
            client
                .state()
                .await
                .ok()
                .filter(|s| s.primary.as_deref() == Some(EU))
        },
    )
    .await;
    println!(
        "automatic failover {:?} after eu-west-1's node came up",
        stopped_at.elapsed()
    );
    let ev = s.history.last().expect("event");
    assert_eq!(
        (ev.actor.as_str(), ev.planned, ev.epoch),
        ("auto", false, 2)
    );
    wait_until("the eu-west-1 lease", Duration::from_secs(3), || {
        eu.current().filter(|(e, _)| *e == 2)
    })
    .await;
    cluster.stop().await;
}

/// A target region lagging by a fixed number of records.
struct FixedLag(u64);

#[async_trait::async_trait]
impl CatchUp for FixedLag {
    async fn wait_caught_up(&self, _: Option<&str>, _: &str, _: u64) -> Result<(), String> {
        Ok(())
    }

    async fn check_failover_lag(&self, to: &str, max: u64) -> Result<(), String> {
        if self.0 > max {
            Err(format!("{to} lags by {} records (bound {max})", self.0))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_a_lagging_region_is_refused_unless_forced() {
    let cluster = Cluster::start_with_catch_up(0, Arc::new(FixedLag(500))).await;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await;
    cluster.wait_initialized().await;
    let client = cluster.client(None);

    let refused = client
        .failover(EU, false, "alice", "drill")
        .await
        .expect_err("a lagging target is refused");
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("lags by 500"), "{refused}");
    let s = client.state().await.expect("state");
    assert_eq!((s.primary.as_deref(), s.epoch), (Some(US), 1));
    assert!(s.switchover_in_progress.is_none());

    let s = client
        .failover(EU, true, "alice", "drill, forced")
        .await
        .expect("forced failover");
    assert_eq!((s.primary.as_deref(), s.epoch), (Some(EU), 2));
    assert!(s.history.last().expect("event").forced);
    cluster.stop().await;
}
