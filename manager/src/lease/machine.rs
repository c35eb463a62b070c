//! Task lease transitions. No I/O, no clock reads, no logging: callers pass `now`,
//! persist the new lease when the transition says so, and only then perform the
//! effects (DESIGN §3 "Durability").
//!
//! States: `queued → offered → running → {succeeded | failed | cancelled | lost}`,
//! plus `queued → expired` (no eligible delegate in time) and `cancelled` from any
//! unfinished state. Every offer takes a new, higher epoch; acks, heartbeats and
//! results must carry the current epoch and come from the delegate holding it.
//! A running lease that is not renewed becomes `lost` and is never re-offered.
//!
//! Final states carry an error type (`dray_shared::error_type`): a failure keeps
//! the delegate's (`Unknown` when it sent none), `lost` is `DelegateRestart`,
//! `expired` is `DelegateProvisioning`; success and cancel carry none.

use std::collections::BTreeMap;

use dray_shared::error_type;
use dray_shared::pb::{LeaseEventKind, TaskState};
use dray_shared::{DelegateId, Epoch};

/// Soft and durable state of one task's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Current state.
    pub state: TaskState,
    /// Current (last) epoch.
    pub epoch: Epoch,
    /// Delegate offered / holding the task (the last one, once final).
    pub delegate: Option<DelegateId>,
    /// When the current offer or lease began (Unix ms).
    pub since_ms: i64,
    /// Offered: ack deadline. Running: lease expiry (soft: reset on manager start).
    pub deadline_ms: i64,
    /// Set when the lease was granted.
    pub started_ms: Option<i64>,
    /// Set when final.
    pub finished_ms: Option<i64>,
    /// Exit code reported by the delegate.
    pub exit_code: Option<i32>,
    /// Why it ended the way it did.
    pub reason: String,
    /// Values the task produced, as the delegate reported them.
    pub outputs: BTreeMap<String, String>,
    /// Classified failure (an `error_type` name); empty unless failed, lost or expired.
    pub error_type: String,
    /// An operator asked to cancel a running task; waiting for the delegate.
    pub cancel_requested: bool,
    /// Delegates that declined this task (rejected or did not ack), with why.
    pub declined: Vec<(DelegateId, String)>,
}

impl Lease {
    /// A freshly queued task.
    pub fn queued() -> Self {
        Lease {
            state: TaskState::Queued,
            epoch: Epoch(0),
            delegate: None,
            since_ms: 0,
            deadline_ms: 0,
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            reason: String::new(),
            outputs: BTreeMap::new(),
            error_type: String::new(),
            cancel_requested: false,
            declined: Vec::new(),
        }
    }
}

/// How a delegate said a task ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// Exit status 0 / handler success.
    pub success: bool,
    /// Process exit code, if any.
    pub exit_code: Option<i32>,
    /// Failure message (already masked by the delegate).
    pub message: String,
    /// The delegate stopped it because it was cancelled.
    pub cancelled: bool,
    /// Values the task produced (already masked by the delegate).
    pub outputs: BTreeMap<String, String>,
    /// The delegate's classification of a failure; may be empty.
    pub error_type: String,
}

/// Something that happens to a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Offer the queued task to `to`, who must ack within `ack_ms`.
    Offer {
        /// Chosen delegate.
        to: DelegateId,
        /// Acknowledgement window.
        ack_ms: i64,
    },
    /// The delegate accepted the offer.
    Ack {
        /// Sender, from its certificate.
        by: DelegateId,
        /// Epoch it acknowledges.
        epoch: Epoch,
        /// Lease TTL to grant.
        ttl_ms: i64,
    },
    /// The delegate declined the offer (capability check failed, draining...).
    Reject {
        /// Sender.
        by: DelegateId,
        /// Epoch it rejects.
        epoch: Epoch,
        /// Its reason.
        reason: String,
    },
    /// Lease renewal.
    Heartbeat {
        /// Sender.
        by: DelegateId,
        /// Epoch it renews.
        epoch: Epoch,
        /// Lease TTL.
        ttl_ms: i64,
    },
    /// The delegate reports the end of the work.
    Finish {
        /// Sender.
        by: DelegateId,
        /// Epoch of the work.
        epoch: Epoch,
        /// What happened.
        outcome: Outcome,
    },
    /// The ack deadline of `epoch` passed.
    AckTimeout {
        /// Epoch of the offer.
        epoch: Epoch,
    },
    /// Time to check whether the running lease of `epoch` expired.
    LeaseCheck {
        /// Epoch of the lease.
        epoch: Epoch,
    },
    /// The session of the delegate holding an offer went away.
    SessionLost {
        /// That delegate.
        delegate: DelegateId,
    },
    /// The delegate reconnected; `held` is the epoch it says it holds (running or
    /// finished) for this task, `acked` the epoch it acknowledged but never got
    /// the grant for, if any.
    Reattach {
        /// The delegate.
        by: DelegateId,
        /// What it holds.
        held: Option<Epoch>,
        /// What it acknowledged but never started.
        acked: Option<Epoch>,
        /// Lease TTL.
        ttl_ms: i64,
    },
    /// The delegate was revoked.
    Revoked {
        /// That delegate.
        delegate: DelegateId,
    },
    /// An operator cancels the task.
    Cancel,
    /// The queue timeout passed; `explanation` says why no delegate took it.
    QueueTimeout {
        /// Per-delegate explanation.
        explanation: String,
    },
}

/// A message for a delegate that a transition wants sent, after the commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Send the offer.
    Offer {
        /// Ack deadline.
        ack_by_ms: i64,
    },
    /// The lease is durable: start.
    Granted {
        /// Lease expiry.
        expires_ms: i64,
    },
    /// The result is recorded.
    ResultAccepted,
    /// Stop the work: the lease is not (or no longer) valid.
    Refused {
        /// Why.
        reason: String,
    },
    /// Stop the work: cancelled by an operator.
    Cancel,
}

/// A side effect, performed by the engine only after the new state is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to a delegate, about `epoch`.
    Send {
        /// Recipient.
        to: DelegateId,
        /// Epoch the message is about.
        epoch: Epoch,
        /// What.
        msg: Message,
    },
    /// Arm a timer delivering `event` at `at_ms`.
    Timer {
        /// When.
        at_ms: i64,
        /// What to deliver.
        event: Event,
    },
    /// Publish a lease event to watchers.
    Publish {
        /// Which.
        kind: LeaseEventKind,
        /// Delegate concerned.
        delegate: Option<DelegateId>,
        /// Epoch concerned.
        epoch: Epoch,
        /// Milliseconds since the offer or lease began.
        age_ms: i64,
        /// Reason, outcome...
        detail: String,
    },
    /// Put the task back in the queue for another offer.
    Requeue,
}

/// What a successful step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new lease.
    pub next: Lease,
    /// Whether `next` must be committed before the effects run. Soft changes
    /// (renewal, cancel request) are not persisted.
    pub persist: bool,
    /// Effects, in order.
    pub effects: Vec<Effect>,
}

/// Why an event was refused; the lease is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The sender's epoch is not the current one.
    #[error("stale epoch {got}, current is {current}")]
    StaleEpoch {
        /// Epoch sent.
        got: Epoch,
        /// Current epoch.
        current: Epoch,
    },
    /// The sender does not hold this task.
    #[error("delegate {by} does not hold this task")]
    NotHolder {
        /// Sender.
        by: DelegateId,
    },
    /// The event makes no sense in this state.
    #[error("{event} is not valid in state {state}")]
    Invalid {
        /// Current state name.
        state: &'static str,
        /// Event name.
        event: &'static str,
    },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Offer { .. } => "offer",
            Event::Ack { .. } => "ack",
            Event::Reject { .. } => "reject",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Finish { .. } => "result",
            Event::AckTimeout { .. } => "ack timeout",
            Event::LeaseCheck { .. } => "lease check",
            Event::SessionLost { .. } => "session lost",
            Event::Reattach { .. } => "reattach",
            Event::Revoked { .. } => "revocation",
            Event::Cancel => "cancel",
            Event::QueueTimeout { .. } => "queue timeout",
        }
    }
}

fn invalid(lease: &Lease, event: &Event) -> Refused {
    Refused::Invalid { state: lease.state.short_name(), event: event.name() }
}

/// Checks that `by` holds the current epoch.
fn holder(lease: &Lease, by: DelegateId, epoch: Epoch) -> Result<(), Refused> {
    if epoch != lease.epoch {
        return Err(Refused::StaleEpoch { got: epoch, current: lease.epoch });
    }
    if lease.delegate != Some(by) {
        return Err(Refused::NotHolder { by });
    }
    Ok(())
}

/// Applies `event` to `lease` at time `now` (Unix ms).
pub fn step(lease: &Lease, event: Event, now: i64) -> Result<Transition, Refused> {
    use TaskState as S;
    let mut next = lease.clone();
    let mut effects = Vec::new();
    let age = now - lease.since_ms;
    let publish = |kind, delegate, epoch, detail: String| Effect::Publish {
        kind,
        delegate,
        epoch,
        age_ms: age,
        detail,
    };
    let persist = match (&lease.state, &event) {
        (S::Queued, Event::Offer { to, ack_ms }) => {
            next.state = S::Offered;
            next.epoch = lease.epoch.next();
            next.delegate = Some(*to);
            next.since_ms = now;
            next.deadline_ms = now + ack_ms;
            effects.push(Effect::Send {
                to: *to,
                epoch: next.epoch,
                msg: Message::Offer { ack_by_ms: next.deadline_ms },
            });
            effects.push(Effect::Timer {
                at_ms: next.deadline_ms,
                event: Event::AckTimeout { epoch: next.epoch },
            });
            effects.push(Effect::Publish {
                kind: LeaseEventKind::Offered,
                delegate: Some(*to),
                epoch: next.epoch,
                age_ms: 0,
                detail: String::new(),
            });
            true
        }
        (S::Offered, Event::Ack { by, epoch, ttl_ms }) => {
            holder(lease, *by, *epoch)?;
            next.state = S::Running;
            next.started_ms = Some(now);
            next.deadline_ms = now + ttl_ms;
            effects.extend(grant(*by, *epoch, next.deadline_ms));
            effects.push(publish(LeaseEventKind::Acknowledged, Some(*by), *epoch, String::new()));
            next.since_ms = now;
            true
        }
        (S::Offered, Event::Reject { by, epoch, reason }) => {
            holder(lease, *by, *epoch)?;
            requeue(&mut next, *by, reason.clone());
            effects.push(publish(LeaseEventKind::Rejected, Some(*by), *epoch, reason.clone()));
            effects.push(Effect::Requeue);
            true
        }
        (S::Offered, Event::AckTimeout { epoch }) if *epoch == lease.epoch => {
            let by = lease.delegate.ok_or_else(|| invalid(lease, &event))?;
            requeue(&mut next, by, "did not acknowledge the offer in time".into());
            effects.push(Effect::Send {
                to: by,
                epoch: *epoch,
                msg: Message::Refused { reason: "offer expired".into() },
            });
            effects.push(publish(LeaseEventKind::OfferExpired, Some(by), *epoch, String::new()));
            effects.push(Effect::Requeue);
            true
        }
        (S::Offered, Event::SessionLost { delegate }) if lease.delegate == Some(*delegate) => {
            // Nothing ran: work only starts on a grant, which comes after an ack.
            // Not counted as a decline: a network blip says nothing about whether
            // this delegate can run the task (a pinned task could never run again).
            next.state = S::Queued;
            next.delegate = None;
            effects.push(publish(
                LeaseEventKind::OfferExpired,
                Some(*delegate),
                lease.epoch,
                "delegate disconnected".into(),
            ));
            effects.push(Effect::Requeue);
            true
        }
        (S::Offered, Event::Revoked { delegate }) if lease.delegate == Some(*delegate) => {
            requeue(&mut next, *delegate, "revoked".into());
            effects.push(Effect::Requeue);
            true
        }
        (S::Running, Event::Heartbeat { by, epoch, ttl_ms }) => {
            holder(lease, *by, *epoch)?;
            next.deadline_ms = now + ttl_ms;
            effects.push(publish(LeaseEventKind::Renewed, Some(*by), *epoch, String::new()));
            false
        }
        (S::Running, Event::Reattach { by, held, acked, ttl_ms }) if lease.delegate == Some(*by) => {
            match (held, acked) {
                (Some(e), _) if *e == lease.epoch => {
                    next.deadline_ms = now + ttl_ms;
                    if lease.cancel_requested {
                        // The cancel may have been sent while it was disconnected.
                        effects.push(Effect::Send { to: *by, epoch: lease.epoch, msg: Message::Cancel });
                    }
                    effects.push(publish(
                        LeaseEventKind::Renewed,
                        Some(*by),
                        lease.epoch,
                        "reattached".into(),
                    ));
                    false
                }
                (_, Some(e)) if *e == lease.epoch => {
                    // The grant was lost with the old session: the delegate never
                    // started, so granting again is the first and only start.
                    next.deadline_ms = now + ttl_ms;
                    effects.extend(grant(*by, lease.epoch, next.deadline_ms));
                    effects.push(publish(
                        LeaseEventKind::Renewed,
                        Some(*by),
                        lease.epoch,
                        "grant re-sent".into(),
                    ));
                    false
                }
                _ => {
                    lose(&mut next, now, "delegate reconnected without this lease (it restarted)");
                    effects.push(publish(LeaseEventKind::Lost, Some(*by), lease.epoch, next.reason.clone()));
                    if let Some(e) = held.or(*acked) {
                        effects.push(Effect::Send {
                            to: *by,
                            epoch: e,
                            msg: Message::Refused {
                                reason: format!("stale epoch {e}, current is {}", lease.epoch),
                            },
                        });
                    }
                    true
                }
            }
        }
        (S::Running, Event::Finish { by, epoch, outcome }) => {
            holder(lease, *by, *epoch)?;
            next.state = if lease.cancel_requested || outcome.cancelled {
                S::Cancelled
            } else if outcome.success {
                S::Succeeded
            } else {
                S::Failed
            };
            next.exit_code = outcome.exit_code;
            next.reason = match next.state {
                S::Cancelled => "cancelled by operator".into(),
                S::Succeeded => String::new(),
                _ if outcome.message.is_empty() => "failed".into(),
                _ => outcome.message.clone(),
            };
            // Outputs are kept whatever the end: a failed script's variables
            // are often what explains the failure.
            next.outputs = outcome.outputs.clone();
            next.error_type = match next.state {
                S::Failed if outcome.error_type.is_empty() => error_type::UNKNOWN.into(),
                S::Failed => outcome.error_type.clone(),
                _ => String::new(),
            };
            next.finished_ms = Some(now);
            effects.push(Effect::Send { to: *by, epoch: *epoch, msg: Message::ResultAccepted });
            effects.push(publish(
                LeaseEventKind::Finished,
                Some(*by),
                *epoch,
                next.state.short_name().to_string(),
            ));
            true
        }
        (S::Running, Event::LeaseCheck { epoch }) if *epoch == lease.epoch => {
            if now < lease.deadline_ms {
                effects.push(Effect::Timer {
                    at_ms: lease.deadline_ms,
                    event: Event::LeaseCheck { epoch: *epoch },
                });
                false
            } else {
                lose(&mut next, now, "lease expired: no heartbeat from the delegate within the TTL");
                if let Some(d) = lease.delegate {
                    effects.push(Effect::Send {
                        to: d,
                        epoch: *epoch,
                        msg: Message::Refused { reason: "lease lost".into() },
                    });
                }
                effects.push(publish(LeaseEventKind::Lost, lease.delegate, *epoch, next.reason.clone()));
                true
            }
        }
        (S::Running, Event::Revoked { delegate }) if lease.delegate == Some(*delegate) => {
            lose(&mut next, now, "delegate revoked");
            effects.push(publish(LeaseEventKind::Lost, Some(*delegate), lease.epoch, next.reason.clone()));
            true
        }
        (S::Running, Event::Cancel) => {
            // Repeated cancels re-send the request (the first may have gone to a
            // session that was already gone); delegates ignore duplicates.
            next.cancel_requested = true;
            if let Some(d) = lease.delegate {
                effects.push(Effect::Send { to: d, epoch: lease.epoch, msg: Message::Cancel });
            }
            false
        }
        (S::Queued | S::Offered, Event::Cancel) => {
            next.state = S::Cancelled;
            next.reason = "cancelled by operator".into();
            next.finished_ms = Some(now);
            if let (S::Offered, Some(d)) = (lease.state, lease.delegate) {
                effects.push(Effect::Send {
                    to: d,
                    epoch: lease.epoch,
                    msg: Message::Refused { reason: "cancelled".into() },
                });
            }
            effects.push(publish(LeaseEventKind::Cancelled, lease.delegate, lease.epoch, String::new()));
            true
        }
        (S::Queued, Event::QueueTimeout { explanation }) => {
            next.state = S::Expired;
            next.reason = explanation.clone();
            next.error_type = error_type::DELEGATE_PROVISIONING.into();
            next.finished_ms = Some(now);
            true
        }
        // Timers and session notices for an epoch or state that has moved on are no-ops.
        (
            _,
            Event::AckTimeout { .. }
            | Event::LeaseCheck { .. }
            | Event::SessionLost { .. }
            | Event::Revoked { .. },
        ) => {
            return Ok(Transition { next, persist: false, effects });
        }
        (_, Event::Ack { by, epoch, .. })
        | (_, Event::Reject { by, epoch, .. })
        | (_, Event::Heartbeat { by, epoch, .. })
        | (_, Event::Finish { by, epoch, .. }) => {
            holder(lease, *by, *epoch)?;
            return Err(invalid(lease, &event));
        }
        _ => return Err(invalid(lease, &event)),
    };
    Ok(Transition { next, persist, effects })
}

/// Tell `to` its lease under `epoch` is durable, and check it at `expires_ms`.
fn grant(to: DelegateId, epoch: Epoch, expires_ms: i64) -> [Effect; 2] {
    [
        Effect::Send { to, epoch, msg: Message::Granted { expires_ms } },
        Effect::Timer { at_ms: expires_ms, event: Event::LeaseCheck { epoch } },
    ]
}

fn requeue(next: &mut Lease, by: DelegateId, why: String) {
    next.state = TaskState::Queued;
    next.delegate = None;
    next.declined.retain(|(d, _)| *d != by);
    next.declined.push((by, why));
}

fn lose(next: &mut Lease, now: i64, why: &str) {
    next.state = TaskState::Lost;
    next.reason = why.to_string();
    next.error_type = error_type::DELEGATE_RESTART.into();
    next.finished_ms = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: i64 = 1_000;

    fn offered(to: DelegateId) -> Lease {
        step(&Lease::queued(), Event::Offer { to, ack_ms: 500 }, 0).unwrap().next
    }

    fn running(to: DelegateId) -> Lease {
        let l = offered(to);
        step(&l, Event::Ack { by: to, epoch: l.epoch, ttl_ms: TTL }, 10).unwrap().next
    }

    #[test]
    fn happy_path() {
        let d = DelegateId::new();
        let t = step(&Lease::queued(), Event::Offer { to: d, ack_ms: 500 }, 0).unwrap();
        assert!(t.persist);
        assert_eq!(t.next.state, TaskState::Offered);
        assert_eq!(t.next.epoch, Epoch(1));
        assert!(matches!(t.effects[0], Effect::Send { msg: Message::Offer { ack_by_ms: 500 }, .. }));
        let t = step(&t.next, Event::Ack { by: d, epoch: Epoch(1), ttl_ms: TTL }, 10).unwrap();
        assert_eq!(t.next.state, TaskState::Running);
        assert!(matches!(t.effects[0], Effect::Send { msg: Message::Granted { expires_ms: 1010 }, .. }));
        let t = step(
            &t.next,
            Event::Finish {
                by: d,
                epoch: Epoch(1),
                outcome: Outcome {
                    success: false,
                    exit_code: Some(3),
                    message: "exit code 3".into(),
                    outputs: BTreeMap::from([("X".to_string(), "1".to_string())]),
                    ..Outcome::default()
                },
            },
            20,
        )
        .unwrap();
        assert_eq!(t.next.state, TaskState::Failed);
        assert_eq!(t.next.exit_code, Some(3));
        assert_eq!(t.next.reason, "exit code 3");
        assert_eq!(t.next.error_type, "Unknown", "a failure without a type is Unknown");
        assert_eq!(t.next.outputs["X"], "1", "a failed task keeps its outputs");
    }

    fn finish(l: &Lease, by: DelegateId, outcome: Outcome) -> Lease {
        step(l, Event::Finish { by, epoch: l.epoch, outcome }, 20).unwrap().next
    }

    #[test]
    fn final_states_carry_their_error_type() {
        let d = DelegateId::new();
        let timeout =
            Outcome { error_type: "Timeout".into(), message: "timed out".into(), ..Outcome::default() };
        let l = finish(&running(d), d, timeout);
        assert_eq!((l.state, l.error_type.as_str()), (TaskState::Failed, "Timeout"));

        // Success and cancel carry none, even if the delegate sent one.
        let ok = Outcome {
            success: true,
            error_type: "Unknown".into(),
            outputs: BTreeMap::from([("httpResponseCode".to_string(), "200".to_string())]),
            ..Outcome::default()
        };
        let l = finish(&running(d), d, ok);
        assert_eq!((l.state, l.error_type.as_str()), (TaskState::Succeeded, ""));
        assert_eq!(l.outputs["httpResponseCode"], "200");
        let cancelled = Outcome { cancelled: true, error_type: "Unknown".into(), ..Outcome::default() };
        let l = finish(&running(d), d, cancelled);
        assert_eq!((l.state, l.error_type.as_str()), (TaskState::Cancelled, ""));
        let l = step(&Lease::queued(), Event::Cancel, 5).unwrap().next;
        assert_eq!((l.state, l.error_type.as_str()), (TaskState::Cancelled, ""));

        // Lost, however it is lost.
        let l = running(d);
        let lost = step(&l, Event::LeaseCheck { epoch: l.epoch }, 5_000).unwrap().next;
        assert_eq!((lost.state, lost.error_type.as_str()), (TaskState::Lost, "DelegateRestart"));
        let lost =
            step(&l, Event::Reattach { by: d, held: None, acked: None, ttl_ms: TTL }, 50).unwrap().next;
        assert_eq!(lost.error_type, "DelegateRestart");
        let lost = step(&l, Event::Revoked { delegate: d }, 50).unwrap().next;
        assert_eq!(lost.error_type, "DelegateRestart");

        let l = step(&Lease::queued(), Event::QueueTimeout { explanation: "nobody".into() }, 5).unwrap().next;
        assert_eq!((l.state, l.error_type.as_str()), (TaskState::Expired, "DelegateProvisioning"));
    }

    #[test]
    fn stale_epoch_and_wrong_delegate_are_refused() {
        let d = DelegateId::new();
        let l = running(d);
        let outcome = Outcome { success: true, exit_code: Some(0), ..Outcome::default() };
        let e = step(&l, Event::Finish { by: d, epoch: Epoch(0), outcome: outcome.clone() }, 20).unwrap_err();
        assert_eq!(e, Refused::StaleEpoch { got: Epoch(0), current: Epoch(1) });
        let other = DelegateId::new();
        let e = step(&l, Event::Finish { by: other, epoch: Epoch(1), outcome }, 20).unwrap_err();
        assert_eq!(e, Refused::NotHolder { by: other });
    }

    #[test]
    fn unrenewed_lease_is_lost_not_requeued() {
        let d = DelegateId::new();
        let l = running(d);
        let t = step(&l, Event::LeaseCheck { epoch: l.epoch }, 500).unwrap();
        assert!(!t.persist, "not yet expired");
        let t = step(&l, Event::LeaseCheck { epoch: l.epoch }, 1010).unwrap();
        assert_eq!(t.next.state, TaskState::Lost);
        assert!(!t.effects.contains(&Effect::Requeue));
        // A zombie result afterwards is refused.
        let outcome = Outcome { success: true, exit_code: Some(0), ..Outcome::default() };
        assert!(step(&t.next, Event::Finish { by: d, epoch: l.epoch, outcome }, 2000).is_err());
    }

    #[test]
    fn heartbeat_extends_the_lease() {
        let d = DelegateId::new();
        let l = running(d);
        let l = step(&l, Event::Heartbeat { by: d, epoch: l.epoch, ttl_ms: TTL }, 900).unwrap().next;
        let t = step(&l, Event::LeaseCheck { epoch: l.epoch }, 1010).unwrap();
        assert_eq!(t.next.state, TaskState::Running);
        assert!(matches!(t.effects[0], Effect::Timer { at_ms: 1900, .. }));
    }

    #[test]
    fn rejected_or_unacked_offers_requeue_and_remember_who_declined() {
        let d = DelegateId::new();
        let l = offered(d);
        let t = step(&l, Event::Reject { by: d, epoch: l.epoch, reason: "no bash".into() }, 5).unwrap();
        assert_eq!(t.next.state, TaskState::Queued);
        assert_eq!(t.next.declined, vec![(d, "no bash".to_string())]);
        assert!(t.effects.contains(&Effect::Requeue));
        let l = offered(d);
        let t = step(&l, Event::AckTimeout { epoch: l.epoch }, 600).unwrap();
        assert_eq!(t.next.state, TaskState::Queued);
        // A late ack for the expired offer is stale once re-offered.
        let again = step(&t.next, Event::Offer { to: d, ack_ms: 500 }, 700).unwrap().next;
        assert!(matches!(
            step(&again, Event::Ack { by: d, epoch: l.epoch, ttl_ms: TTL }, 701),
            Err(Refused::StaleEpoch { .. })
        ));
    }

    #[test]
    fn cancel_running_waits_for_the_delegate() {
        let d = DelegateId::new();
        let l = running(d);
        let t = step(&l, Event::Cancel, 20).unwrap();
        assert!(t.next.cancel_requested);
        assert!(matches!(t.effects[0], Effect::Send { msg: Message::Cancel, .. }));
        let outcome = Outcome { message: "killed".into(), cancelled: true, ..Outcome::default() };
        let t = step(&t.next, Event::Finish { by: d, epoch: l.epoch, outcome }, 30).unwrap();
        assert_eq!(t.next.state, TaskState::Cancelled);
    }

    #[test]
    fn reattach_without_the_lease_loses_it() {
        let d = DelegateId::new();
        let l = running(d);
        let t = step(&l, Event::Reattach { by: d, held: None, acked: None, ttl_ms: TTL }, 50).unwrap();
        assert_eq!(t.next.state, TaskState::Lost);
        let t =
            step(&l, Event::Reattach { by: d, held: Some(l.epoch), acked: None, ttl_ms: TTL }, 50).unwrap();
        assert_eq!(t.next.state, TaskState::Running);
        assert_eq!(t.next.deadline_ms, 1050);
        assert!(t.effects.iter().all(|e| !matches!(e, Effect::Send { .. })), "nothing to re-send");
    }

    #[test]
    fn reattach_with_an_ungranted_ack_gets_the_grant_again() {
        let d = DelegateId::new();
        let l = running(d);
        let t =
            step(&l, Event::Reattach { by: d, held: None, acked: Some(l.epoch), ttl_ms: TTL }, 50).unwrap();
        assert_eq!(t.next.state, TaskState::Running, "it never started: not lost");
        assert!(!t.persist);
        assert!(matches!(t.effects[0], Effect::Send { msg: Message::Granted { expires_ms: 1050 }, .. }));
        // An ack for an older epoch is no excuse.
        let t =
            step(&l, Event::Reattach { by: d, held: None, acked: Some(Epoch(0)), ttl_ms: TTL }, 50).unwrap();
        assert_eq!(t.next.state, TaskState::Lost);
    }

    fn arb_event(ds: [DelegateId; 2]) -> impl Strategy<Value = Event> {
        let d = prop::sample::select(ds.to_vec());
        let e = (0u64..4).prop_map(Epoch);
        prop_oneof![
            d.clone().prop_map(|to| Event::Offer { to, ack_ms: 100 }),
            (d.clone(), e.clone()).prop_map(|(by, epoch)| Event::Ack { by, epoch, ttl_ms: TTL }),
            (d.clone(), e.clone()).prop_map(|(by, epoch)| Event::Reject { by, epoch, reason: "x".into() }),
            (d.clone(), e.clone()).prop_map(|(by, epoch)| Event::Heartbeat { by, epoch, ttl_ms: TTL }),
            (d.clone(), e.clone(), any::<bool>()).prop_map(|(by, epoch, success)| Event::Finish {
                by,
                epoch,
                outcome: Outcome { success, ..Outcome::default() }
            }),
            e.clone().prop_map(|epoch| Event::AckTimeout { epoch }),
            e.prop_map(|epoch| Event::LeaseCheck { epoch }),
            d.clone().prop_map(|delegate| Event::SessionLost { delegate }),
            Just(Event::Cancel),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_event_sequence(
            events in prop::collection::vec((arb_event([DelegateId::new(), DelegateId::new()]), 0i64..3000), 0..40)
        ) {
            let mut lease = Lease::queued();
            let mut now = 0;
            for (event, dt) in events {
                now += dt;
                let before = lease.clone();
                match step(&lease, event.clone(), now) {
                    Ok(t) => {
                        prop_assert!(t.next.epoch >= before.epoch, "epoch never decreases");
                        if before.state.is_final() {
                            prop_assert_eq!(&t.next.state, &before.state, "final states are final");
                        }
                        if before.state == TaskState::Running || before.state == TaskState::Lost {
                            prop_assert!(!t.effects.contains(&Effect::Requeue), "work that may have started is never requeued");
                        }
                        if before.state == TaskState::Lost {
                            prop_assert_ne!(t.next.state, TaskState::Running);
                        }
                        match t.next.state {
                            TaskState::Failed | TaskState::Lost | TaskState::Expired => {
                                prop_assert!(!t.next.error_type.is_empty(), "failures are classified")
                            }
                            _ => prop_assert_eq!(t.next.error_type.as_str(), "", "only failures are classified"),
                        }
                        lease = t.next;
                    }
                    Err(Refused::StaleEpoch { .. }) | Err(Refused::NotHolder { .. }) | Err(Refused::Invalid { .. }) => {
                        // A refused event never mutates: `lease` is untouched by construction.
                    }
                }
            }
        }
    }
}
