//! Validity rules as plain functions of values and the present moment.

use crate::error::RuleError;
use crate::limits::MAX_CLOCK_SKEW_MS;
use crate::time::Timestamp;

/// An update replaces what is held only with a strictly higher version.
pub fn check_version_rises(current: u64, offered: u64) -> Result<(), RuleError> {
    if offered > current {
        Ok(())
    } else {
        Err(RuleError::StaleVersion { current, offered })
    }
}

/// A message with an expiry is dead once `now` has reached it.
pub fn check_expiry(expiry: Option<Timestamp>, now: Timestamp) -> Result<(), RuleError> {
    match expiry {
        Some(at) if now >= at => Err(RuleError::Expired { expiry: at.0, now: now.0 }),
        _ => Ok(()),
    }
}

/// An advert may not claim to be created further in the future than the
/// clock skew tolerated between nodes.
pub fn check_created_not_future(created: Timestamp, now: Timestamp) -> Result<(), RuleError> {
    if created.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
        Err(RuleError::FromTheFuture { created: created.0, now: now.0, skew_ms: MAX_CLOCK_SKEW_MS })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_must_rise_strictly() {
        assert!(check_version_rises(3, 4).is_ok());
        assert_eq!(check_version_rises(4, 4), Err(RuleError::StaleVersion { current: 4, offered: 4 }));
        assert!(check_version_rises(4, 2).is_err());
    }

    #[test]
    fn expiry_is_exclusive_of_the_moment_itself() {
        let at = Timestamp(100);
        assert!(check_expiry(Some(at), Timestamp(99)).is_ok());
        assert!(check_expiry(Some(at), Timestamp(100)).is_err());
        assert!(check_expiry(None, Timestamp(u64::MAX)).is_ok());
    }

    #[test]
    fn created_may_be_slightly_ahead_but_not_far() {
        let now = Timestamp(1_000_000);
        assert!(check_created_not_future(now.saturating_add_millis(MAX_CLOCK_SKEW_MS), now).is_ok());
        assert!(check_created_not_future(now.saturating_add_millis(MAX_CLOCK_SKEW_MS + 1), now).is_err());
    }
}
