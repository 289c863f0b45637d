//! Pure judgement of a systemd unit's state while waiting for it (no D-Bus here).

/// What systemd reports about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitObservation {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// A start (or other) job for the unit is queued.
    pub job_queued: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitVerdict {
    /// Active: go on.
    Ready,
    /// Not active yet (or failed, or stopped): keep waiting for a change.
    Wait,
    /// An optional unit nobody is starting: do not wait for it.
    NotNeeded,
    /// The unit does not exist.
    Missing,
}

/// `required` units are waited for whatever their state (tailscaled may be started by hand
/// after a failure); optional ones only while they are starting or queued to start.
pub fn judge_unit(u: &UnitObservation, required: bool) -> UnitVerdict {
    if u.load_state == "not-found" || u.load_state == "masked" {
        return if required {
            UnitVerdict::Missing
        } else {
            UnitVerdict::NotNeeded
        };
    }
    match u.active_state.as_str() {
        "active" | "reloading" => UnitVerdict::Ready,
        "activating" => UnitVerdict::Wait,
        _ if required => UnitVerdict::Wait,
        _ if u.job_queued => UnitVerdict::Wait,
        _ => UnitVerdict::NotNeeded,
    }
}

/// A one-line description for status lines: "failed (exit-code)".
pub fn describe(u: &UnitObservation) -> String {
    if u.sub_state.is_empty() || u.sub_state == u.active_state {
        u.active_state.clone()
    } else {
        format!("{} ({})", u.active_state, u.sub_state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(load: &str, active: &str, job: bool) -> UnitObservation {
        UnitObservation {
            load_state: load.into(),
            active_state: active.into(),
            sub_state: String::new(),
            job_queued: job,
        }
    }

    #[test]
    fn required_units_are_awaited_in_every_state_but_active() {
        let table = [
            (obs("loaded", "active", false), UnitVerdict::Ready),
            (obs("loaded", "reloading", false), UnitVerdict::Ready),
            (obs("loaded", "activating", true), UnitVerdict::Wait),
            (obs("loaded", "failed", false), UnitVerdict::Wait),
            (obs("loaded", "inactive", false), UnitVerdict::Wait),
            (obs("loaded", "deactivating", false), UnitVerdict::Wait),
            (obs("not-found", "inactive", false), UnitVerdict::Missing),
            (obs("masked", "inactive", false), UnitVerdict::Missing),
        ];
        for (o, want) in table {
            assert_eq!(judge_unit(&o, true), want, "{o:?}");
        }
    }

    #[test]
    fn optional_units_are_awaited_only_while_queued_or_starting() {
        let table = [
            (obs("loaded", "active", false), UnitVerdict::Ready),
            (obs("loaded", "inactive", true), UnitVerdict::Wait),
            (obs("loaded", "activating", false), UnitVerdict::Wait),
            (obs("loaded", "inactive", false), UnitVerdict::NotNeeded),
            (obs("loaded", "failed", false), UnitVerdict::NotNeeded),
            (obs("not-found", "inactive", false), UnitVerdict::NotNeeded),
        ];
        for (o, want) in table {
            assert_eq!(judge_unit(&o, false), want, "{o:?}");
        }
    }

    #[test]
    fn descriptions_add_the_sub_state_when_it_says_more() {
        let mut o = obs("loaded", "failed", false);
        o.sub_state = "failed".into();
        assert_eq!(describe(&o), "failed");
        o.sub_state = "exit-code".into();
        assert_eq!(describe(&o), "failed (exit-code)");
    }
}
