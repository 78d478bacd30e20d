//! `verify`: compares this region with the primary.
//!
//! - Pointers: the primary's rows (catalogs, namespaces with their properties, tables and
//!   views with their metadata location and version) are read in one consistent snapshot at
//!   its head `H`; this region's rows at its watermark `W`. When its replicator is
//!   following, the node first waits (bounded) for its watermark to reach `H`. Entities
//!   touched by records between the two positions (`W < seq <= H`, or the reverse; records
//!   a resync floor covers excepted) are in flight: listed in `in_flight`, not compared. A
//!   region still behind `H` also gets a `lag` difference (it is not equal to the primary).
//! - Objects: for every table whose pointer is equal, every object its current metadata
//!   references (metadata JSON, manifest lists, manifests, data and delete files,
//!   statistics; listed from this region's own copies) must be in this region's bucket with
//!   the size and ETag of the primary's copy (ETags of multipart uploads are not comparable
//!   and only the size counts, as for the copier); for a view, its metadata file.
//!
//! On the primary itself only the objects are checked (present in its own bucket). Object
//! checks run with the replicator's `copy_parallelism`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use super::copier::{same_object, CopyError};
use super::replicator::{PeerRegion, Replication};
use super::resync::{fetch_changes, fetch_snapshot, objects_of_entity, store_error};
use crate::error::CatalogError;
use crate::storage::ObjectStore;
use crate::store::{
    CatalogSelector, CatalogState, ChangeRecord, EntityKind, StateSnapshot, TableRecord,
};

/// How long verify waits for this region's watermark to reach the primary's head.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Most records between the two positions examined for in-flight entities.
const MAX_IN_FLIGHT_RECORDS: u32 = 10_000;

/// One difference between this region and the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `catalog-missing`, `catalog-extra`, `catalog-properties`, `namespace-missing`,
    /// `namespace-extra`, `namespace-properties`, `table-missing`, `table-extra`, `lag`
    /// (this region has not applied the primary's log up to its head; name: the seqs),
    /// `pointer` (location, version, name or kind differ), `object-missing`,
    /// `object-differs` (size or ETag), `object-missing-at-primary`, `metadata-unreadable`.
    pub kind: String,
    /// Catalog name.
    pub catalog: String,
    /// `ns.table`, `ns`, or an object location.
    pub name: String,
    pub detail: String,
}

/// Counts of what was compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared {
    pub catalogs: usize,
    pub namespaces: usize,
    pub tables: usize,
    pub views: usize,
    pub objects: usize,
}

/// What `POST /api/v1/replication/verify` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub region: String,
    /// The region compared with (None: this region is the primary; objects only).
    pub primary: Option<String>,
    /// No differences.
    pub equal: bool,
    /// This region's watermark the comparison used.
    pub watermark: i64,
    /// The primary's head the comparison used.
    pub primary_head: i64,
    pub compared: Compared,
    /// Entities changed between the two positions (not compared): `ns.table`, `ns`, ids.
    pub in_flight: Vec<String>,
    pub differences: Vec<Difference>,
}

/// Compares this region with the primary (one catalog by name, or all).
pub async fn verify(
    rep: &Replication,
    catalog: Option<&str>,
) -> Result<VerifyReport, CatalogError> {
    let selector = catalog.map_or(CatalogSelector::All, |c| {
        CatalogSelector::Name(c.to_string())
    });
    let query: Vec<(&str, String)> = catalog
        .map(|c| vec![("catalog", c.to_string())])
        .unwrap_or_default();
    let primary = match rep.primary_peer() {
        Some((p, peer)) if p != rep.region() => Some((
            p.clone(),
            peer.ok_or_else(|| {
                CatalogError::Unavailable(format!("primary region {p} is not among [[regions]]"))
            })?,
        )),
        _ => None,
    };
    let Some((primary, peer)) = primary else {
        let here = rep
            .store()
            .state_snapshot(&selector)
            .await
            .map_err(store_error)?;
        let mut report = VerifyReport {
            region: rep.region().to_string(),
            primary: None,
            equal: true,
            watermark: here.head,
            primary_head: here.head,
            compared: Compared::default(),
            in_flight: Vec::new(),
            differences: Vec::new(),
        };
        let tables: Vec<(String, TableRecord)> = here
            .catalogs
            .iter()
            .flat_map(|c| c.tables.iter().map(|t| (c.catalog.name.clone(), t.clone())))
            .collect();
        count_catalogs(&mut report.compared, &here);
        check_objects(rep, None, &tables, &mut report).await;
        report.equal = report.differences.is_empty();
        return Ok(report);
    };

    let theirs = fetch_snapshot(rep.http(), &peer, &query).await?;
    // Let this region catch up with the snapshot, so that little or nothing is in flight.
    let started = Instant::now();
    loop {
        let wm = rep
            .store()
            .replication_watermark()
            .await
            .map_err(store_error)?;
        if wm.seq >= theirs.head || started.elapsed() >= CATCH_UP_WAIT || !rep.is_following() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = rep
        .store()
        .state_snapshot(&selector)
        .await
        .map_err(store_error)?;
    let between = if ours.head < theirs.head {
        fetch_changes(
            rep.http(),
            &peer,
            ours.head,
            MAX_IN_FLIGHT_RECORDS.min((theirs.head - ours.head) as u32),
        )
        .await?
        .records
    } else if ours.head > theirs.head {
        rep.store()
            .changes_after(theirs.head, MAX_IN_FLIGHT_RECORDS)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|r| r.seq <= ours.head)
            .collect()
    } else {
        Vec::new()
    };
    // A resynced catalog reflects its records up to its floor already.
    let floors = rep.store().resync_floors().await.map_err(store_error)?;
    // Only records of the compared catalogs matter.
    let selected: HashSet<&str> = ours
        .catalogs
        .iter()
        .chain(&theirs.catalogs)
        .map(|c| c.catalog.id.as_str())
        .collect();
    let between: Vec<ChangeRecord> = between
        .into_iter()
        .filter(|r| {
            r.catalog_id.as_deref().is_some_and(|c| {
                selected.contains(c) && floors.get(c).is_none_or(|floor| r.seq > *floor)
            })
        })
        .collect();
    let flight = InFlight::of(&between);
    let mut report = VerifyReport {
        region: rep.region().to_string(),
        primary: Some(primary),
        equal: true,
        watermark: ours.head,
        primary_head: theirs.head,
        compared: Compared::default(),
        in_flight: flight.names.iter().cloned().collect(),
        differences: Vec::new(),
    };
    if ours.head < theirs.head && !between.is_empty() {
        // Behind the primary (paused, halted, slow): the entities changed since are not
        // compared, and the region is not equal to the primary.
        let catalog = catalog.unwrap_or("*");
        diff(
            &mut report,
            "lag",
            catalog,
            format!("seq {}..={}", ours.head + 1, theirs.head),
            format!(
                "this region has applied the primary's log up to seq {} of {}: {} records \
                 of the compared catalogs not applied yet (their entities are in_flight, \
                 not compared)",
                ours.head,
                theirs.head,
                between.len()
            ),
        );
    }
    let equal_tables = compare_rows(&ours, &theirs, &flight, &mut report);
    check_objects(rep, Some(&peer), &equal_tables, &mut report).await;
    report.equal = report.differences.is_empty();
    Ok(report)
}

fn count_catalogs(compared: &mut Compared, snapshot: &StateSnapshot) {
    compared.catalogs += snapshot.catalogs.len();
    for c in &snapshot.catalogs {
        compared.namespaces += c.namespaces.len();
        compared.tables += c
            .tables
            .iter()
            .filter(|t| t.kind == EntityKind::Table)
            .count();
        compared.views += c
            .tables
            .iter()
            .filter(|t| t.kind == EntityKind::View)
            .count();
    }
}

/// Entities changed by records between the two compared positions.
#[derive(Default)]
struct InFlight {
    catalogs: HashSet<String>,
    namespaces: HashSet<(String, Vec<String>)>,
    tables: HashSet<String>,
    names: std::collections::BTreeSet<String>,
}

impl InFlight {
    fn of(records: &[ChangeRecord]) -> InFlight {
        let mut f = InFlight::default();
        for r in records {
            let p = &r.payload;
            match r.op.as_str() {
                "create_catalog" => {
                    if let Some(id) = p["id"].as_str() {
                        f.catalogs.insert(id.to_string());
                        f.names.insert(format!("catalog {id}"));
                    }
                }
                "create_namespace" | "update_namespace_properties" | "drop_namespace" => {
                    let ns: Vec<String> =
                        serde_json::from_value(p["namespace"].clone()).unwrap_or_default();
                    let catalog = p["catalog_id"].as_str().unwrap_or_default().to_string();
                    f.names.insert(format!("namespace {}", ns.join(".")));
                    f.namespaces.insert((catalog, ns));
                }
                _ => {
                    if let Some(id) = p["id"].as_str() {
                        f.tables.insert(id.to_string());
                        let ns: Vec<String> = serde_json::from_value(
                            p.get("to_namespace").unwrap_or(&p["namespace"]).clone(),
                        )
                        .unwrap_or_default();
                        let name = p
                            .get("to_name")
                            .or_else(|| p.get("name"))
                            .and_then(|n| n.as_str())
                            .unwrap_or_default();
                        f.names.insert(format!("{} {}.{name}", r.op, ns.join(".")));
                    }
                }
            }
        }
        f
    }
}

fn diff(report: &mut VerifyReport, kind: &str, catalog: &str, name: String, detail: String) {
    report.differences.push(Difference {
        kind: kind.to_string(),
        catalog: catalog.to_string(),
        name,
        detail,
    });
}

fn ident(t: &TableRecord) -> String {
    format!("{}.{}", t.namespace.join("."), t.name)
}

/// Compares the rows; returns the tables and views whose pointers are equal (to check
/// their objects).
fn compare_rows(
    ours: &StateSnapshot,
    theirs: &StateSnapshot,
    flight: &InFlight,
    report: &mut VerifyReport,
) -> Vec<(String, TableRecord)> {
    let mut equal = Vec::new();
    let ours_by_id: HashMap<&str, &CatalogState> = ours
        .catalogs
        .iter()
        .map(|c| (c.catalog.id.as_str(), c))
        .collect();
    count_catalogs(&mut report.compared, theirs);
    for t in &theirs.catalogs {
        let name = t.catalog.name.clone();
        let id = t.catalog.id.as_str();
        let Some(o) = ours_by_id.get(id) else {
            if !flight.catalogs.contains(id) {
                diff(
                    report,
                    "catalog-missing",
                    &name,
                    name.clone(),
                    format!("catalog {id} is missing here"),
                );
            }
            continue;
        };
        if o.catalog != t.catalog {
            diff(
                report,
                "catalog-properties",
                &name,
                name.clone(),
                format!("here {:?}, primary {:?}", o.catalog, t.catalog),
            );
        }
        let ns_ours: BTreeMap<&Vec<String>, _> = o
            .namespaces
            .iter()
            .map(|n| (&n.name, &n.properties))
            .collect();
        let ns_theirs: BTreeMap<&Vec<String>, _> = t
            .namespaces
            .iter()
            .map(|n| (&n.name, &n.properties))
            .collect();
        for (ns, props) in &ns_theirs {
            if flight.namespaces.contains(&(id.to_string(), (*ns).clone())) {
                continue;
            }
            match ns_ours.get(ns) {
                None => diff(
                    report,
                    "namespace-missing",
                    &name,
                    ns.join("."),
                    "missing here".into(),
                ),
                Some(here) if here != props => diff(
                    report,
                    "namespace-properties",
                    &name,
                    ns.join("."),
                    format!("here {here:?}, primary {props:?}"),
                ),
                Some(_) => {}
            }
        }
        for ns in ns_ours.keys() {
            if !ns_theirs.contains_key(ns)
                && !flight.namespaces.contains(&(id.to_string(), (*ns).clone()))
            {
                diff(
                    report,
                    "namespace-extra",
                    &name,
                    ns.join("."),
                    "exists here, not at the primary".into(),
                );
            }
        }
        let t_ours: HashMap<&str, &TableRecord> =
            o.tables.iter().map(|x| (x.id.as_str(), x)).collect();
        let t_theirs: HashMap<&str, &TableRecord> =
            t.tables.iter().map(|x| (x.id.as_str(), x)).collect();
        for (tid, there) in &t_theirs {
            if flight.tables.contains(*tid) {
                continue;
            }
            match t_ours.get(tid) {
                None => diff(
                    report,
                    "table-missing",
                    &name,
                    ident(there),
                    format!("{} {tid} is missing here", there.kind.as_str()),
                ),
                Some(here) if here != there => diff(
                    report,
                    "pointer",
                    &name,
                    ident(there),
                    format!(
                        "here {} v{} {} as {}; primary {} v{} {} as {}",
                        here.kind.as_str(),
                        here.version,
                        here.metadata_location,
                        ident(here),
                        there.kind.as_str(),
                        there.version,
                        there.metadata_location,
                        ident(there)
                    ),
                ),
                Some(here) => equal.push((name.clone(), (*here).clone())),
            }
        }
        for (tid, here) in &t_ours {
            if !t_theirs.contains_key(tid) && !flight.tables.contains(*tid) {
                diff(
                    report,
                    "table-extra",
                    &name,
                    ident(here),
                    format!(
                        "{} {tid} exists here, not at the primary",
                        here.kind.as_str()
                    ),
                );
            }
        }
    }
    let theirs_ids: HashSet<&str> = theirs
        .catalogs
        .iter()
        .map(|c| c.catalog.id.as_str())
        .collect();
    for o in &ours.catalogs {
        if !theirs_ids.contains(o.catalog.id.as_str()) && !flight.catalogs.contains(&o.catalog.id) {
            diff(
                report,
                "catalog-extra",
                &o.catalog.name,
                o.catalog.name.clone(),
                format!("catalog {} exists here, not at the primary", o.catalog.id),
            );
        }
    }
    equal
}

/// One object's check: None when fine.
async fn check_object(
    local: &ObjectStore,
    primary: Option<&ObjectStore>,
    location: &str,
) -> Option<(&'static str, String)> {
    let here = match local.head(location).await {
        Ok(h) => h,
        Err(e) => return Some(("object-missing", format!("cannot read it here: {e}"))),
    };
    let Some(here) = here else {
        return Some(("object-missing", "missing in this region's bucket".into()));
    };
    let primary = primary?;
    match primary.head(location).await {
        Err(e) => Some((
            "object-missing-at-primary",
            format!("cannot read it at the primary: {e}"),
        )),
        Ok(None) => Some((
            "object-missing-at-primary",
            "present here but missing in the primary's bucket".into(),
        )),
        Ok(Some(there)) if !same_object(&there, &here) => Some((
            "object-differs",
            format!(
                "here {} bytes etag {:?}, primary {} bytes etag {:?}",
                here.size, here.etag, there.size, there.etag
            ),
        )),
        Ok(Some(_)) => None,
    }
}

/// Checks the objects of `tables` (bounded parallelism), adding differences to `report`.
async fn check_objects(
    rep: &Replication,
    peer: Option<&PeerRegion>,
    tables: &[(String, TableRecord)],
    report: &mut VerifyReport,
) {
    let local = rep.local_objects().clone();
    let parallelism = rep.parallelism();
    // List each table's objects from this region's copies.
    let listed: Vec<(String, TableRecord, Result<Vec<String>, CopyError>)> =
        stream::iter(tables.iter().cloned())
            .map(|(catalog, t)| {
                let local = local.clone();
                async move {
                    let objects = objects_of_entity(&local, &t).await;
                    (catalog, t, objects)
                }
            })
            .buffer_unordered(parallelism)
            .collect()
            .await;
    let mut objects: Vec<(String, String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for (catalog, t, result) in listed {
        match result {
            Ok(list) => {
                for o in list {
                    if seen.insert(o.clone()) {
                        objects.push((catalog.clone(), ident(&t), o));
                    }
                }
            }
            Err(CopyError::MissingAtSource { location }) => diff(
                report,
                "object-missing",
                &catalog,
                location,
                format!(
                    "referenced by {} and missing in this region's bucket",
                    ident(&t)
                ),
            ),
            Err(e) => diff(
                report,
                "metadata-unreadable",
                &catalog,
                e.location().to_string(),
                format!("{} of {}", e, ident(&t)),
            ),
        }
    }
    report.compared.objects += objects.len();
    let primary_store = peer.map(|p| p.objects.clone());
    let results: Vec<_> = stream::iter(objects)
        .map(|(catalog, table, location)| {
            let local = local.clone();
            let primary = primary_store.clone();
            async move {
                let problem = check_object(&local, primary.as_ref(), &location).await;
                (catalog, table, location, problem)
            }
        })
        .buffer_unordered(parallelism)
        .collect()
        .await;
    let mut results = results;
    results.sort_by(|a, b| a.2.cmp(&b.2));
    for (catalog, table, location, problem) in results {
        if let Some((kind, detail)) = problem {
            diff(
                report,
                kind,
                &catalog,
                location,
                format!("{detail} (table {table})"),
            );
        }
    }
}
