//! The Raft type configuration of the control plane and the replicated data types: the
//! commands ([`ControlCommand`]), their answers ([`ControlResponse`]) and the state they
//! build ([`ControlState`]).

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

/// Voter id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the control plane: voters are `u64` ids with a `host:port` address.
    pub TypeConfig:
        D = ControlCommand,
        R = ControlResponse,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of a voter.
pub type ControlRaft = openraft::Raft<TypeConfig>;

/// Region name of the tie-breaking voter that never becomes primary.
pub const WITNESS: &str = "witness";

/// A catalog region as the control plane first learns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInit {
    pub name: String,
    /// Where the region can be reached (today: its voter's control address).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A replicated control-plane command. Every time stamp is chosen by the proposing leader
/// from its wall clock and carried in the command; applying never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlCommand {
    /// First state of the cluster; refused once initialised.
    Initialize {
        primary: String,
        regions: Vec<RegionInit>,
        now_ms: u64,
    },
    /// Grants or renews the write lease of `region` until `now_ms + lease_ms`.
    GrantLease {
        region: String,
        epoch: u64,
        holder: String,
        now_ms: u64,
        lease_ms: u64,
    },
    /// Fences the current primary (no lease is granted or renewed while it is in progress)
    /// ahead of moving the primary to `to`.
    BeginSwitchover {
        to: String,
        actor: String,
        reason: String,
        now_ms: u64,
        /// `false` when the fence is the first step of an unplanned failover.
        #[serde(default = "default_true")]
        planned: bool,
        /// The failover was forced (bypasses the replication lag bound).
        #[serde(default)]
        force: bool,
    },
    /// Ends the switchover begun at `epoch`: `to` becomes primary at `epoch + 1`.
    CompleteSwitchover { to: String, epoch: u64, now_ms: u64 },
    /// Unplanned failover to `to`: epoch + 1, whatever the current primary does.
    Failover {
        to: String,
        force: bool,
        actor: String,
        reason: String,
        now_ms: u64,
    },
    /// Gives up a switchover in progress: the old primary stays primary at the same epoch.
    AbortSwitchover { reason: String, now_ms: u64 },
}

fn default_true() -> bool {
    true
}

/// What applying one log entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// The command changed the state as asked (for a lease: it was granted).
    pub applied: bool,
    /// Why it was refused (when `applied` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Epoch and primary after the command.
    pub epoch: u64,
    pub primary: Option<String>,
    /// Expiry of the lease after a [`ControlCommand::GrantLease`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_ms: Option<u64>,
}

/// The write lease held by the primary region's catalog nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub region: String,
    pub epoch: u64,
    /// Last node that renewed it.
    pub holder: String,
    pub granted_at_ms: u64,
    pub expires_at_ms: u64,
}

/// Per-region bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatus {
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Last time (leader clock, ms since the Unix epoch) a lease was granted or renewed.
    #[serde(default)]
    pub last_lease_at_ms: Option<u64>,
    #[serde(default)]
    pub last_holder: Option<String>,
}

/// One change of primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverEvent {
    pub from: Option<String>,
    pub to: String,
    /// The epoch that began with this change.
    pub epoch: u64,
    pub at_ms: u64,
    pub planned: bool,
    #[serde(default)]
    pub forced: bool,
    pub actor: String,
    pub reason: String,
}

/// A switchover (or the fence of a failover) in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    pub from: Option<String>,
    pub to: String,
    /// Epoch at which it began; the new primary gets `epoch + 1`.
    pub epoch: u64,
    pub actor: String,
    pub reason: String,
    pub started_at_ms: u64,
    pub planned: bool,
    #[serde(default)]
    pub forced: bool,
}

/// The replicated control-plane state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// False until the first [`ControlCommand::Initialize`] is applied.
    pub initialized: bool,
    /// Fencing token of the primary; starts at 1, + 1 on every change of primary.
    pub epoch: u64,
    /// None while a switchover fences the old primary.
    pub primary: Option<String>,
    pub regions: BTreeMap<String, RegionStatus>,
    pub lease: Option<Lease>,
    pub history: Vec<FailoverEvent>,
    pub switchover_in_progress: Option<Switchover>,
}

impl Default for ControlState {
    fn default() -> Self {
        ControlState {
            initialized: false,
            epoch: 1,
            primary: None,
            regions: BTreeMap::new(),
            lease: None,
            history: Vec::new(),
            switchover_in_progress: None,
        }
    }
}

impl ControlState {
    /// Applies one command. Deterministic: the same command on the same state gives the same
    /// state and answer on every voter.
    pub fn apply(&mut self, cmd: &ControlCommand) -> ControlResponse {
        match self.apply_inner(cmd) {
            Ok(expires) => self.answer(true, None, expires),
            Err(reason) => self.answer(false, Some(reason), None),
        }
    }

    fn answer(
        &self,
        applied: bool,
        reason: Option<String>,
        expires: Option<u64>,
    ) -> ControlResponse {
        ControlResponse {
            applied,
            reason,
            epoch: self.epoch,
            primary: self.primary.clone(),
            lease_expires_at_ms: expires,
        }
    }

    /// Whether `region` is a catalog region known to the cluster.
    pub fn knows_region(&self, region: &str) -> bool {
        self.regions.contains_key(region)
    }

    /// Why a lease for `region` at `epoch` cannot be granted in this state, if it cannot.
    pub fn lease_refusal(&self, region: &str, epoch: u64) -> Option<String> {
        if !self.initialized {
            return Some("the control plane is not initialised".into());
        }
        if let Some(s) = &self.switchover_in_progress {
            return Some(format!("a switchover to {} is fencing the primary", s.to));
        }
        if self.primary.as_deref() != Some(region) {
            return Some(format!("{region} is not the primary region"));
        }
        if epoch != self.epoch {
            return Some(format!(
                "epoch {epoch} is not the current epoch {}",
                self.epoch
            ));
        }
        None
    }

    /// Refuses `to` unless the lease of another region has expired at `now_ms`.
    fn other_lease_expired(&self, to: &str, now_ms: u64) -> Result<(), String> {
        match &self.lease {
            Some(l) if l.region != to && l.expires_at_ms > now_ms => Err(format!(
                "the lease of {} is valid for {} more ms",
                l.region,
                l.expires_at_ms - now_ms
            )),
            _ => Ok(()),
        }
    }

    fn apply_inner(&mut self, cmd: &ControlCommand) -> Result<Option<u64>, String> {
        if !self.initialized && !matches!(cmd, ControlCommand::Initialize { .. }) {
            return Err("the control plane is not initialised".into());
        }
        match cmd {
            ControlCommand::Initialize {
                primary,
                regions,
                now_ms: _,
            } => {
                if self.initialized {
                    return Err("already initialised".into());
                }
                if !regions.iter().any(|r| &r.name == primary) {
                    return Err(format!("initial primary {primary} is not a catalog region"));
                }
                self.initialized = true;
                self.primary = Some(primary.clone());
                for r in regions {
                    self.regions.insert(
                        r.name.clone(),
                        RegionStatus {
                            endpoint: r.endpoint.clone(),
                            ..RegionStatus::default()
                        },
                    );
                }
                Ok(None)
            }
            ControlCommand::GrantLease {
                region,
                epoch,
                holder,
                now_ms,
                lease_ms,
            } => {
                if let Some(why) = self.lease_refusal(region, *epoch) {
                    return Err(why);
                }
                self.other_lease_expired(region, *now_ms)?;
                // A renewal never shortens the lease (a proposal may carry an older clock).
                let expires = match &self.lease {
                    Some(l) if l.region == *region && l.epoch == *epoch => {
                        l.expires_at_ms.max(now_ms.saturating_add(*lease_ms))
                    }
                    _ => now_ms.saturating_add(*lease_ms),
                };
                self.lease = Some(Lease {
                    region: region.clone(),
                    epoch: *epoch,
                    holder: holder.clone(),
                    granted_at_ms: *now_ms,
                    expires_at_ms: expires,
                });
                let status = self.regions.entry(region.clone()).or_default();
                status.last_lease_at_ms = Some(*now_ms);
                status.last_holder = Some(holder.clone());
                Ok(Some(expires))
            }
            ControlCommand::BeginSwitchover {
                to,
                actor,
                reason,
                now_ms,
                planned,
                force,
            } => {
                if let Some(s) = &self.switchover_in_progress {
                    return Err(format!("a switchover to {} is already in progress", s.to));
                }
                if !self.knows_region(to) {
                    return Err(format!("unknown region {to}"));
                }
                if self.primary.as_deref() == Some(to.as_str()) {
                    return Err(format!("{to} is already the primary region"));
                }
                self.switchover_in_progress = Some(Switchover {
                    from: self.primary.take(),
                    to: to.clone(),
                    epoch: self.epoch,
                    actor: actor.clone(),
                    reason: reason.clone(),
                    started_at_ms: *now_ms,
                    planned: *planned,
                    forced: *force,
                });
                Ok(None)
            }
            ControlCommand::CompleteSwitchover { to, epoch, now_ms } => {
                let Some(s) = self.switchover_in_progress.clone() else {
                    return Err("no switchover in progress".into());
                };
                if &s.to != to || s.epoch != *epoch || self.epoch != *epoch {
                    return Err(format!(
                        "the switchover in progress goes to {} at epoch {}",
                        s.to, s.epoch
                    ));
                }
                self.other_lease_expired(to, *now_ms)?;
                self.epoch += 1;
                self.primary = Some(to.clone());
                self.lease = None;
                self.switchover_in_progress = None;
                self.history.push(FailoverEvent {
                    from: s.from,
                    to: to.clone(),
                    epoch: self.epoch,
                    at_ms: *now_ms,
                    planned: s.planned,
                    forced: s.forced,
                    actor: s.actor,
                    reason: s.reason,
                });
                Ok(None)
            }
            ControlCommand::Failover {
                to,
                force,
                actor,
                reason,
                now_ms,
            } => {
                if !self.knows_region(to) {
                    return Err(format!("unknown region {to}"));
                }
                if self.switchover_in_progress.is_none() && self.primary.as_deref() == Some(to) {
                    return Err(format!("{to} is already the primary region"));
                }
                self.other_lease_expired(to, *now_ms)?;
                let from = match self.switchover_in_progress.take() {
                    Some(s) => s.from,
                    None => self.primary.clone(),
                };
                self.epoch += 1;
                self.primary = Some(to.clone());
                self.lease = None;
                self.history.push(FailoverEvent {
                    from,
                    to: to.clone(),
                    epoch: self.epoch,
                    at_ms: *now_ms,
                    planned: false,
                    forced: *force,
                    actor: actor.clone(),
                    reason: reason.clone(),
                });
                Ok(None)
            }
            ControlCommand::AbortSwitchover { .. } => {
                let Some(s) = self.switchover_in_progress.take() else {
                    return Err("no switchover in progress".into());
                };
                self.primary = s.from;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialized() -> ControlState {
        let mut s = ControlState::default();
        let r = s.apply(&ControlCommand::Initialize {
            primary: "a".into(),
            regions: vec![
                RegionInit {
                    name: "a".into(),
                    endpoint: None,
                },
                RegionInit {
                    name: "b".into(),
                    endpoint: None,
                },
            ],
            now_ms: 0,
        });
        assert!(r.applied);
        s
    }

    fn grant(s: &mut ControlState, region: &str, epoch: u64, now_ms: u64) -> ControlResponse {
        s.apply(&ControlCommand::GrantLease {
            region: region.into(),
            epoch,
            holder: "n".into(),
            now_ms,
            lease_ms: 100,
        })
    }

    #[test]
    fn lease_only_for_primary_at_current_epoch() {
        let mut s = initialized();
        assert!(grant(&mut s, "a", 1, 10).applied);
        assert!(!grant(&mut s, "b", 1, 10).applied);
        assert!(!grant(&mut s, "a", 2, 10).applied);
        assert_eq!(s.lease.as_ref().map(|l| l.expires_at_ms), Some(110));
    }

    #[test]
    fn switchover_fences_then_completes_after_expiry() {
        let mut s = initialized();
        assert!(grant(&mut s, "a", 1, 10).applied);
        let begin = ControlCommand::BeginSwitchover {
            to: "b".into(),
            actor: "op".into(),
            reason: "test".into(),
            now_ms: 20,
            planned: true,
            force: false,
        };
        assert!(s.apply(&begin).applied);
        assert_eq!(s.primary, None);
        assert!(!grant(&mut s, "a", 1, 30).applied);
        let early = ControlCommand::CompleteSwitchover {
            to: "b".into(),
            epoch: 1,
            now_ms: 50,
        };
        assert!(!s.apply(&early).applied, "old lease still valid");
        let done = ControlCommand::CompleteSwitchover {
            to: "b".into(),
            epoch: 1,
            now_ms: 200,
        };
        assert!(s.apply(&done).applied);
        assert_eq!((s.epoch, s.primary.as_deref()), (2, Some("b")));
        assert!(!s.apply(&done).applied, "a second completion is refused");
        assert!(grant(&mut s, "b", 2, 210).applied);
        assert_eq!(s.history.len(), 1);
        assert!(s.history[0].planned);
    }

    #[test]
    fn failover_refuses_unknown_region_and_live_lease() {
        let mut s = initialized();
        assert!(grant(&mut s, "a", 1, 10).applied);
        let f = |to: &str, now_ms| ControlCommand::Failover {
            to: to.into(),
            force: false,
            actor: "op".into(),
            reason: "test".into(),
            now_ms,
        };
        assert!(!s.apply(&f("witness", 500)).applied);
        assert!(!s.apply(&f("b", 50)).applied);
        assert!(s.apply(&f("b", 500)).applied);
        assert_eq!((s.epoch, s.primary.as_deref()), (2, Some("b")));
        assert!(!s.history[0].planned);
    }
}
