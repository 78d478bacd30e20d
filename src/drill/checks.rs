//! The checks after a drill's workload, recorded as events for the report: which drill ids
//! the surviving primary holds, what the quarantine report lists, and rounds of `verify` over
//! every other region until all are equal to the primary (or the bound runs out).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::report::{EventKind, PrimaryContents, QuarantineCheck, RegionVerify, VerifyRound};
use super::workload::{Deployment, Recorder};

/// Waits (up to `bound`) for a primary that answers, then records what it holds.
pub async fn primary_contents(dep: &Deployment, writers: u32, rec: &Recorder, bound: Duration) {
    let deadline = Instant::now() + bound;
    let mut last_err = String::from("no primary known");
    loop {
        if let Some((_, Some(primary), _)) = dep.control().await {
            if let Some(e) = dep.endpoint(&primary) {
                match dep.ids_at(&e.url, writers).await {
                    Ok(ids) => {
                        rec.now(EventKind::PrimaryContents(PrimaryContents {
                            region: primary,
                            ok: true,
                            ids,
                            error: None,
                        }));
                        return;
                    }
                    Err(err) => last_err = format!("{primary}: {err:#}"),
                }
            } else {
                last_err = format!("primary {primary} has no endpoint in this drill");
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rec.now(EventKind::PrimaryContents(PrimaryContents {
        region: String::new(),
        ok: false,
        ids: Vec::new(),
        error: Some(last_err),
    }));
}

/// Whether an answer means "this route is not served here" (an older build).
fn not_served(status: u16, body: &str) -> bool {
    status == 404 || status == 405 || (status == 400 && body.contains("No route"))
}

/// Reads the quarantine report of every region; records the drill ids it lists.
pub async fn quarantine(dep: &Deployment, rec: &Recorder) {
    let prefix = format!("drill.{}.", dep.run_id);
    let mut ids = BTreeSet::new();
    let mut available = false;
    let mut errors = Vec::new();
    for e in &dep.endpoints {
        let resp = dep
            .http
            .get(format!("{}/api/v1/replication/quarantine", e.url))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                available = true;
                let v: Value = r.json().await.unwrap_or(Value::Null);
                for entry in v["entries"].as_array().into_iter().flatten() {
                    if let Some(props) = entry["properties"].as_object() {
                        ids.extend(props.keys().filter(|k| k.starts_with(&prefix)).cloned());
                    }
                }
            }
            Ok(r) => {
                let s = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if not_served(s, &body) {
                    errors.push(format!("{}: quarantine not served ({s})", e.region));
                } else {
                    errors.push(format!(
                        "{}: {s} {}",
                        e.region,
                        body.chars().take(200).collect::<String>()
                    ));
                }
            }
            Err(err) => errors.push(format!("{}: {err}", e.region)),
        }
    }
    rec.now(EventKind::Quarantine(QuarantineCheck {
        available,
        ids: ids.into_iter().collect(),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }));
}

/// Runs verify rounds over every non-primary region until all are equal or `bound` ends.
/// A region whose replicator halted (a diverged log after failback) is resynced once.
pub async fn converge(dep: &Deployment, writers: u32, rec: &Recorder, bound: Duration) {
    let deadline = Instant::now() + bound;
    let mut resynced = BTreeSet::new();
    loop {
        let primary = dep.control().await.and_then(|(_, p, _)| p);
        let mut round = VerifyRound::default();
        if let Some(primary) = &primary {
            for e in dep.endpoints.iter().filter(|e| &e.region != primary) {
                round
                    .regions
                    .push(verify_region(dep, writers, &e.region, primary).await);
            }
        }
        let done = primary.is_some() && round.regions.iter().all(|r| r.equal);
        if primary.is_some() {
            rec.now(EventKind::Verify(round));
        }
        if done || Instant::now() >= deadline {
            return;
        }
        // a halted replicator does not converge by itself: resync it (the runbook's step)
        for e in &dep.endpoints {
            if resynced.contains(&e.region) || Some(&e.region) == primary.as_ref() {
                continue;
            }
            let st: Option<Value> = match dep
                .probe
                .get(format!("{}/api/v1/replication/status", e.url))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            if st.as_ref().and_then(|v| v["halted"].as_bool()) == Some(true) {
                resynced.insert(e.region.clone());
                let r = dep
                    .http
                    .post(format!("{}/api/v1/replication/resync", e.url))
                    .json(&json!({"catalog": dep.catalog}))
                    .send()
                    .await;
                let what = match r {
                    Ok(r) => r.status().to_string(),
                    Err(err) => err.to_string(),
                };
                rec.note(format!(
                    "{} replication halted: resync requested ({what})",
                    e.region
                ));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn verify_region(
    dep: &Deployment,
    writers: u32,
    region: &str,
    primary: &str,
) -> RegionVerify {
    let mut out = RegionVerify {
        region: region.to_string(),
        method: "verify".into(),
        ..Default::default()
    };
    let Some(e) = dep.endpoint(region) else {
        out.error = Some("no endpoint".into());
        return out;
    };
    let resp = dep
        .http
        .post(format!("{}/api/v1/replication/verify", e.url))
        .json(&json!({"catalog": dep.catalog}))
        .send()
        .await;
    // A region still behind (or stuck on a diverged log) has not converged, whatever a
    // comparison at its own watermark says.
    let status: Option<Value> = match dep
        .probe
        .get(format!("{}/api/v1/replication/status", e.url))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.ok(),
        _ => None,
    };
    let behind = status.as_ref().and_then(|v| {
        let lag = v["lag_records"].as_i64()?;
        (lag != 0 || v["role"] != "secondary").then(|| {
            format!(
                "replication {} ({}), lag {lag} records{}",
                v["state"].as_str().unwrap_or("?"),
                v["role"].as_str().unwrap_or("?"),
                v["last_error"]["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        })
    });
    let mut out = match resp {
        Ok(r) if r.status().is_success() => {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            out.equal = v["equal"].as_bool().unwrap_or(false);
            out.differences = v["differences"].as_array().cloned().unwrap_or_default();
            out.pointers_resolve = !out.differences.iter().any(|d| {
                let kind = d["kind"].as_str().unwrap_or("").to_ascii_lowercase();
                kind.contains("missing") || kind.contains("object")
            });
            out
        }
        Ok(r) => {
            let s = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if not_served(s, &body) {
                // Older build without verify: compare the drill tables' pointers instead.
                out.method = "pointers".into();
                compare_pointers(dep, writers, out, primary).await
            } else {
                out.error = Some(format!(
                    "verify: {s} {}",
                    body.chars().take(200).collect::<String>()
                ));
                out
            }
        }
        Err(err) => {
            out.error = Some(format!("verify: {err}"));
            out
        }
    };
    if let Some(why) = behind {
        out.equal = false;
        out.error = Some(match out.error.take() {
            Some(e) => format!("{e}; {why}"),
            None => why,
        });
    }
    out
}

/// The fallback comparison: each drill table's metadata location in the region equals the
/// primary's, and the region can load it (its metadata file is present in its bucket).
async fn compare_pointers(
    dep: &Deployment,
    writers: u32,
    mut out: RegionVerify,
    primary: &str,
) -> RegionVerify {
    let (Some(p), Some(r)) = (dep.endpoint(primary), dep.endpoint(&out.region)) else {
        out.error = Some("no endpoint".into());
        return out;
    };
    let theirs = dep.locations_at(&p.url, writers).await;
    let ours = dep.locations_at(&r.url, writers).await;
    match (theirs, ours) {
        (Ok(t), Ok(o)) => {
            out.pointers_resolve = true;
            for (w, (a, b)) in t.iter().zip(&o).enumerate() {
                if a != b {
                    out.differences.push(json!({
                        "kind": "pointer", "catalog": dep.catalog,
                        "name": format!("{}.{}", dep.namespace, Deployment::table_name(w as u32)),
                        "detail": format!("primary {a}, region {b}"),
                    }));
                }
            }
            out.equal = out.differences.is_empty();
        }
        (Err(e), _) => out.error = Some(format!("primary: {e:#}")),
        (_, Err(e)) => out.error = Some(format!("region: {e:#}")),
    }
    out
}
