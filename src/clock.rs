//! The wall clock, read in one place: milliseconds since the Unix epoch, the unit every time
//! Pangolin stores (change records, idempotency keys, reports) or sends (leases, drill
//! events) is in.
//!
//! Times are compared across regions only as "how long ago" (lag, lease expiry with a
//! margin), never for ordering: the change log's seq orders writes, not these stamps.

/// Milliseconds since the Unix epoch on this machine's wall clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// [`now_ms`] for the control plane's and drills' unsigned timestamps; a clock set before
/// 1970 reads as 0.
pub fn now_ms_unsigned() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_the_same_clock() {
        let signed = now_ms();
        let unsigned = now_ms_unsigned();
        assert!(signed > 1_600_000_000_000, "after 2020: {signed}");
        assert!(unsigned >= signed as u64 && unsigned - (signed as u64) < 60_000);
    }
}
