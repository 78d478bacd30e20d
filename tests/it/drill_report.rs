//! The drill report is a pure function of the event log: scripted timelines with the exact
//! figures they must give.

use crate::common::PgDatabase;
use pangolin::drill::chart::timeline_svg;
use pangolin::drill::report::{
    compute, parse_token, CommitEvent, ControlSample, Event, EventKind, FailoverMark, FaultMark,
    Outcome, PrimaryContents, QuarantineCheck, RegionVerify, ReplicationSample, RunInfo,
    VerifyRound,
};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

fn ev(at: u64, kind: EventKind) -> Event {
    Event::new(at, kind)
}

fn start(scenario: &str, sync: bool) -> Event {
    ev(
        1000,
        EventKind::WorkloadStart(RunInfo {
            run_id: "r1".into(),
            scenario: scenario.into(),
            writers: 2,
            sync_mode: sync,
            primary: Some(US.into()),
            epoch: Some(1),
            ..Default::default()
        }),
    )
}

fn control(
    at: u64,
    via: &str,
    epoch: u64,
    primary: Option<&str>,
    fencing: bool,
    leader: u64,
) -> Event {
    ev(
        at,
        EventKind::Control(ControlSample {
            via: via.into(),
            ok: true,
            epoch: Some(epoch),
            primary: primary.map(String::from),
            fencing,
            leader: Some(leader),
            term: Some(1),
        }),
    )
}

struct C<'a> {
    sent: u64,
    end: u64,
    id: &'a str,
    via: &'a str,
    outcome: Outcome,
    status: Option<u16>,
    token: Option<&'a str>,
    region: Option<&'a str>,
    error: Option<&'a str>,
}

fn commit(c: C) -> Event {
    ev(
        c.sent,
        EventKind::Commit(CommitEvent {
            id: c.id.into(),
            writer: if c.via == US { 0 } else { 1 },
            endpoint_region: c.via.into(),
            end_ms: c.end,
            outcome: c.outcome,
            status: c.status,
            token: c.token.map(String::from),
            committed_region: c.region.map(String::from),
            error: c.error.map(String::from),
        }),
    )
}

fn ack<'a>(
    sent: u64,
    end: u64,
    id: &'a str,
    via: &'a str,
    token: Option<&'a str>,
    region: &'a str,
) -> Event {
    commit(C {
        sent,
        end,
        id,
        via,
        outcome: Outcome::Acked,
        status: Some(200),
        token,
        region: Some(region),
        error: None,
    })
}

fn refused(sent: u64, end: u64, id: &str, via: &str, error: &str) -> Event {
    commit(C {
        sent,
        end,
        id,
        via,
        outcome: Outcome::Rejected,
        status: Some(503),
        token: None,
        region: None,
        error: Some(error),
    })
}

fn verify(at: u64, region: &str, equal: bool) -> Event {
    ev(
        at,
        EventKind::Verify(VerifyRound {
            regions: vec![RegionVerify {
                region: region.into(),
                method: "verify".into(),
                equal,
                pointers_resolve: true,
                differences: if equal {
                    vec![]
                } else {
                    vec![serde_json::json!({"kind": "pointer", "name": "t"})]
                },
                error: None,
            }],
        }),
    )
}

fn contents(at: u64, region: &str, ids: &[&str]) -> Event {
    ev(
        at,
        EventKind::PrimaryContents(PrimaryContents {
            region: region.into(),
            ok: true,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            error: None,
        }),
    )
}

fn fault(at: u64, action: &str, target: Option<&str>) -> Event {
    ev(
        at,
        EventKind::Fault(FaultMark {
            action: action.into(),
            target: target.map(String::from),
            ..Default::default()
        }),
    )
}

fn quarantine(at: u64, ids: &[&str]) -> Event {
    ev(
        at,
        EventKind::Quarantine(QuarantineCheck {
            available: true,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            error: None,
        }),
    )
}

/// A primary crash in async mode: failover to eu-west-1, commits lost (some quarantined, some
/// not), two split-brain acknowledgements (one by token epoch, one without a token).
fn crash_timeline() -> Vec<Event> {
    vec![
        start("primary-crash", false),
        control(1000, US, 1, Some(US), false, 1),
        control(1500, EU, 1, Some(US), false, 1),
        ack(1100, 1150, "a0", US, Some("1-10"), US),
        ack(1200, 1300, "b0", EU, Some("1-11"), US),
        ev(
            1900,
            EventKind::Replication(ReplicationSample {
                region: US.into(),
                ok: true,
                role: Some("primary".into()),
                lag_records: Some(0),
                ..Default::default()
            }),
        ),
        ev(
            1900,
            EventKind::Replication(ReplicationSample {
                region: EU.into(),
                ok: true,
                role: Some("secondary".into()),
                lag_records: Some(3),
                lag_seconds: Some(0.2),
                ..Default::default()
            }),
        ),
        ack(1900, 1950, "a1", US, Some("1-12"), US),
        ack(1950, 1990, "a2", US, Some("1-13"), US),
        fault(2000, "kill", Some(US)),
        commit(C {
            sent: 2100,
            end: 7100,
            id: "a-unanswered",
            via: US,
            outcome: Outcome::NoAnswer,
            status: None,
            token: None,
            region: None,
            error: Some("connection refused"),
        }),
        refused(
            2200,
            2210,
            "b-fenced",
            EU,
            "ServiceUnavailableException: a switchover to eu-west-1 is fencing the primary",
        ),
        refused(
            3000,
            3010,
            "b-unreachable",
            EU,
            "ServiceUnavailableException: primary region us-east-1 unreachable",
        ),
        control(4000, EU, 1, None, true, 2),
        ev(
            6500,
            EventKind::Failover(FailoverMark {
                from: Some(US.into()),
                to: EU.into(),
                epoch: 2,
                planned: false,
            }),
        ),
        control(7000, EU, 2, Some(EU), false, 2),
        ack(7200, 7300, "b1", EU, Some("2-14"), EU),
        // the old primary acknowledging under epoch 1 after epoch 2 was known
        ack(7400, 7450, "a3", US, Some("1-14"), US),
        // ... and once without a token, named by its region header
        ack(8000, 8050, "a4", US, None, US),
        ack(9000, 9100, "b2", EU, Some("2-15"), EU),
        ev(10_000, EventKind::WorkloadEnd),
        contents(10_100, EU, &["a0", "b0", "b1", "b2"]),
        quarantine(10_200, &["a1", "a3"]),
        verify(11_000, US, false),
        verify(13_500, US, true),
    ]
}

#[test]
fn crash_timeline_gives_exact_figures() {
    let r = compute(&crash_timeline());
    assert_eq!(r.id, "r1");
    assert_eq!(r.scenario, "primary-crash");
    assert_eq!(r.started_ms, 1000);
    assert_eq!(r.fault_at_ms, Some(1000));
    assert_eq!(r.writes.attempted, 11);
    assert_eq!(r.writes.acked, 8);
    assert_eq!(r.writes.rejected, 2);
    assert_eq!(r.writes.no_answer, 1);
    let us = &r.writes_by_region[US];
    assert_eq!(
        (us.attempted, us.acked, us.rejected, us.no_answer),
        (6, 5, 0, 1)
    );
    let eu = &r.writes_by_region[EU];
    assert_eq!(
        (eu.attempted, eu.acked, eu.rejected, eu.no_answer),
        (5, 3, 2, 0)
    );
    // fault 2000 -> fence seen 4000 -> epoch 2 at 6500 (the control plane's own mark)
    assert_eq!(r.time_to_detect_ms, Some(2000));
    assert_eq!(r.election_ms, Some(2500));
    // no ack between 1990 and 7300
    assert_eq!(r.rto_ms, 5310);
    assert_eq!(r.rto_window, Some((990, 6300)));
    assert_eq!(r.rpo_lost, 4);
    assert_eq!(r.rpo_lost_ids, vec!["a1", "a2", "a3", "a4"]);
    assert_eq!(r.quarantined_ids, vec!["a1", "a3"]);
    assert_eq!(r.unreported_lost_ids, vec!["a2", "a4"]);
    assert_eq!(r.stale_epoch_rejected, 1);
    assert_eq!(r.split_brain_accepted, 2);
    assert_eq!(r.split_brain_ids, vec!["a3", "a4"]);
    assert_eq!(r.lag_at_cut.len(), 1);
    assert_eq!(r.lag_at_cut[0].region, EU);
    assert_eq!(r.lag_at_cut[0].records, Some(3));
    assert_eq!(r.lag_at_cut[0].seconds, Some(0.2));
    assert_eq!(r.time_to_converge_ms, Some(3500));
    assert_eq!(r.primary_before.as_deref(), Some(US));
    assert_eq!(r.primary_after.as_deref(), Some(EU));
    assert_eq!((r.epoch_before, r.epoch_after), (Some(1), Some(2)));
    let inv: Vec<(&str, bool)> = r
        .invariants
        .iter()
        .map(|i| (i.name.as_str(), i.passed))
        .collect();
    assert_eq!(
        inv,
        vec![
            ("acknowledged_commits_survive", false),
            ("no_split_brain_writes", false),
            ("pointers_resolve", true),
            ("regions_converge", true),
        ]
    );
    assert!(!r.passed);
}

#[test]
fn the_report_does_not_depend_on_event_order() {
    let mut events = crash_timeline();
    let forward = compute(&events);
    events.reverse();
    assert_eq!(compute(&events), forward);
}

#[test]
fn quarantined_loss_passes_in_async_mode_and_fails_in_sync_mode() {
    let timeline = |sync: bool| {
        vec![
            start("primary-crash", sync),
            control(1000, US, 1, Some(US), false, 1),
            ack(1100, 1200, "a0", US, Some("1-1"), US),
            ack(1300, 1400, "a1", US, Some("1-2"), US),
            fault(2000, "kill", None),
            control(3000, EU, 2, Some(EU), false, 2),
            ack(3500, 3600, "b0", EU, Some("2-3"), EU),
            ev(4000, EventKind::WorkloadEnd),
            contents(4100, EU, &["a0", "b0"]),
            quarantine(4200, &["a1"]),
            verify(5000, US, true),
        ]
    };
    let r = compute(&timeline(false));
    assert_eq!(r.rpo_lost_ids, vec!["a1"]);
    assert_eq!(r.quarantined_ids, vec!["a1"]);
    assert!(r.unreported_lost_ids.is_empty());
    assert_eq!(r.time_to_detect_ms, Some(1000));
    assert_eq!(r.election_ms, Some(0));
    assert_eq!(r.rto_ms, 2200);
    assert_eq!(r.time_to_converge_ms, Some(1000));
    assert!(r.passed, "{}", r.table());

    let r = compute(&timeline(true));
    assert_eq!(r.rpo_lost, 1);
    assert!(!r.passed);
    assert!(!r.invariants[0].passed);
}

#[test]
fn planned_switchover_without_loss_passes() {
    let events = vec![
        start("planned-switchover", false),
        control(1000, US, 1, Some(US), false, 3),
        ack(1000, 1100, "a0", US, Some("1-1"), US),
        ack(1500, 1600, "b0", EU, Some("1-2"), US),
        fault(2000, "switchover", None),
        control(2250, US, 1, None, true, 3),
        refused(
            2300,
            2310,
            "a-fenced",
            US,
            "ServiceUnavailableException: a switchover to eu-west-1 is fencing the primary",
        ),
        control(6250, EU, 2, Some(EU), false, 3),
        ack(6300, 6400, "b1", EU, Some("2-3"), EU),
        ack(6500, 6600, "a1", US, Some("2-4"), EU),
        ev(8000, EventKind::WorkloadEnd),
        contents(8100, EU, &["a0", "b0", "b1", "a1"]),
        quarantine(8200, &[]),
        verify(8300, US, true),
    ];
    let r = compute(&events);
    assert!(r.passed, "{}", r.table());
    assert_eq!(r.rpo_lost, 0);
    assert_eq!(r.split_brain_accepted, 0);
    assert_eq!(r.stale_epoch_rejected, 1);
    assert_eq!(r.time_to_detect_ms, Some(250));
    assert_eq!(r.election_ms, Some(4000));
    // last ack before the switch ends at 1600, first after at 6400
    assert_eq!(r.rto_ms, 4800);
    assert_eq!(r.rto_window, Some((600, 5400)));
    assert_eq!(r.time_to_converge_ms, Some(300));
    // the planned switchover elects no new Raft leader
    assert!(r.lag_at_cut.is_empty());
}

#[test]
fn a_drill_whose_checks_did_not_run_fails() {
    let events = vec![
        start("voter-loss", false),
        ack(1100, 1200, "a0", US, Some("1-1"), US),
        ev(2000, EventKind::WorkloadEnd),
    ];
    let r = compute(&events);
    assert!(!r.passed);
    let failed: Vec<&str> = r
        .invariants
        .iter()
        .filter(|i| !i.passed)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(
        failed,
        vec![
            "acknowledged_commits_survive",
            "pointers_resolve",
            "regions_converge"
        ]
    );
    // without a fault there is nothing to detect
    assert_eq!(r.time_to_detect_ms, None);
    assert_eq!(r.election_ms, None);
}

#[test]
fn voter_loss_reports_the_new_raft_leader_as_election_time() {
    let events = vec![
        start("voter-loss", false),
        control(1000, US, 1, Some(US), false, 3),
        ack(1100, 1200, "a0", US, Some("1-1"), US),
        fault(2000, "kill", None),
        control(2500, US, 1, Some(US), false, 3),
        control(3700, US, 1, Some(US), false, 1),
        ack(3800, 3900, "a1", US, Some("1-2"), US),
        ev(4000, EventKind::WorkloadEnd),
        contents(4100, US, &["a0", "a1"]),
        verify(4200, EU, true),
    ];
    let r = compute(&events);
    assert!(r.passed, "{}", r.table());
    assert_eq!(r.time_to_detect_ms, Some(1700));
    assert_eq!(r.election_ms, Some(1700));
    assert_eq!(r.rto_ms, 2700);
}

#[test]
fn commit_tokens_parse() {
    assert_eq!(parse_token("3-1207"), Some((3, 1207)));
    assert_eq!(parse_token(" 1-0 "), Some((1, 0)));
    assert_eq!(parse_token("3"), None);
    assert_eq!(parse_token("a-1"), None);
}

#[test]
fn events_round_trip_through_json_lines() {
    let events = crash_timeline();
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(lines[0].contains(r#""type":"workload_start""#));
    let back: Vec<Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, events);
    assert_eq!(compute(&back), compute(&events));
}

#[test]
fn the_timeline_chart_marks_faults_and_failovers() {
    let svg = timeline_svg("drill r1", &crash_timeline());
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("kill us-east-1"));
    assert!(svg.contains("epoch 2 primary eu-west-1"));
    assert!(svg.contains("writers stop"));
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "writes of 2 regions, lag of 2"
    );
}

// ---- the drill history (`/api/v1/drills`), on SQLite and PostgreSQL ----------------------

/// The JSON answer to a GET of `url`.
async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn history_round_trip(region: &pangolin::testing::TestRegion) {
    let http = reqwest::Client::new();
    let base = format!("{}/api/v1/drills", region.catalog_url);
    let mut report = compute(&crash_timeline());
    // nothing stored yet
    let list: serde_json::Value = get(&http, &base).await;
    assert_eq!(list, serde_json::json!({"drills": []}));
    for (id, started) in [("older", 1000u64), ("newer", 5000)] {
        report.id = id.into();
        report.started_ms = started;
        let resp = http.post(&base).json(&report).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    // posting the same id again replaces it
    report.passed = true;
    let resp = http.post(&base).json(&report).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let list: serde_json::Value = get(&http, &base).await;
    let drills = list["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 2);
    assert_eq!(drills[0]["id"], "newer");
    assert_eq!(drills[0]["passed"], true);
    assert_eq!(drills[0]["scenario"], "primary-crash");
    assert_eq!(drills[1]["id"], "older");
    assert_eq!(drills[1]["passed"], false);
    let one: serde_json::Value = get(&http, &format!("{base}?limit=1")).await;
    assert_eq!(one["drills"].as_array().unwrap().len(), 1);

    let stored: pangolin::drill::report::DrillReport = get(&http, &format!("{base}/newer")).await;
    assert_eq!(stored, report);

    let missing = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "NotFoundException");

    // bad input changes nothing
    for bad in [
        serde_json::json!({"scenario": "x", "started_ms": 1, "finished_ms": 2, "passed": true}),
        serde_json::json!({"id": "", "scenario": "x", "started_ms": 1, "finished_ms": 2, "passed": true}),
        serde_json::json!({"id": "x", "scenario": "x", "started_ms": -1, "finished_ms": 2, "passed": true}),
        serde_json::json!({"id": "x", "scenario": "x", "started_ms": 1, "finished_ms": 2, "passed": "yes"}),
    ] {
        let resp = http.post(&base).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let resp = http.get(format!("{base}?limit=0")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let list: serde_json::Value = get(&http, &base).await;
    assert_eq!(list["drills"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn drill_history_is_kept_and_served_on_sqlite() {
    let region = pangolin::testing::TestRegion::start().await.unwrap();
    history_round_trip(&region).await;
    region.shutdown().await;
}

#[tokio::test]
async fn drill_history_is_kept_and_served_on_postgres() {
    let db = PgDatabase::create().await;
    let region = pangolin::testing::TestRegion::start_with_database(&db.url)
        .await
        .unwrap();
    history_round_trip(&region).await;
    region.shutdown().await;
    db.drop().await;
}

#[test]
fn a_reaction_that_never_came_fails_the_drill() {
    let mut events = vec![
        start("failback", false),
        control(1000, US, 1, Some(US), false, 1),
        ack(1100, 1200, "a0", US, Some("1-1"), US),
        fault(2000, "isolate", None),
        ev(
            47_000,
            EventKind::Expectation {
                what: "eu-west-1 becomes primary (not within 45 s)".into(),
                met: false,
            },
        ),
        ack(48_000, 48_100, "a1", US, Some("1-2"), US),
        ev(50_000, EventKind::WorkloadEnd),
        contents(50_100, US, &["a0", "a1"]),
        verify(50_200, EU, true),
    ];
    let r = compute(&events);
    assert!(!r.passed);
    let last = r.invariants.last().unwrap();
    assert_eq!(last.name, "scenario_took_effect");
    assert!(!last.passed);
    assert!(
        last.detail.contains("eu-west-1 becomes primary"),
        "{}",
        last.detail
    );

    events[4] = ev(
        7_000,
        EventKind::Expectation {
            what: "eu-west-1 becomes primary".into(),
            met: true,
        },
    );
    assert!(compute(&events).passed);
}
