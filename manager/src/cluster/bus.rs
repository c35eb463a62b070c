//! What replicas tell each other on the store's `tasks` channel (PostgreSQL
//! `NOTIFY`, sent with the commit that makes it true): the text format
//! (`<sender replica> <kind>:<details>`), and splitting many task ids over
//! payloads of bounded size.
//!
//! Notifications are hints: a replica that misses one catches up by polling.

use dray_shared::TaskId;

/// Longest payload sent (PostgreSQL accepts 8000 bytes).
pub const MAX_PAYLOAD: usize = 4000;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These tasks are queued and unowned: anybody with a fitting delegate may claim them.
    Queued(Vec<TaskId>),
    /// These tasks reached a final state.
    Done(Vec<TaskId>),
    /// An operator cancelled this task; its owner acts on it.
    Cancel(TaskId),
    /// Replica `to` holds the session of this running task's delegate and
    /// asks the owner to let the lease go.
    Release {
        /// The task.
        task: TaskId,
        /// The asking replica.
        to: String,
    },
}

/// A payload that is not a notice.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed replica notice {payload:?}: {why}")]
pub struct BadNotice {
    payload: String,
    why: &'static str,
}

impl Notice {
    /// Encodes notices from replica `from` into as few payloads as fit
    /// [`MAX_PAYLOAD`].
    pub fn encode_all(from: &str, notices: &[Notice]) -> Vec<String> {
        let mut out = Vec::new();
        for n in notices {
            match n {
                Notice::Queued(ids) => pack(&mut out, &format!("{from} queued:"), ids),
                Notice::Done(ids) => pack(&mut out, &format!("{from} done:"), ids),
                Notice::Cancel(id) => out.push(format!("{from} cancel:{id}")),
                Notice::Release { task, to } => out.push(format!("{from} release:{task}:{to}")),
            }
        }
        out
    }

    /// Decodes one payload into its sender and notice.
    pub fn decode(payload: &str) -> Result<(String, Notice), BadNotice> {
        let bad = |why| BadNotice { payload: payload.chars().take(200).collect(), why };
        let (from, payload) = payload.split_once(' ').ok_or_else(|| bad("no sender"))?;
        Ok((from.to_string(), Notice::decode_body(payload).map_err(bad)?))
    }

    fn decode_body(payload: &str) -> Result<Notice, &'static str> {
        let bad = |why: &'static str| why;
        let (kind, rest) = payload.split_once(':').ok_or_else(|| bad("no kind"))?;
        let ids = |s: &str| -> Result<Vec<TaskId>, &'static str> {
            s.split(',').map(|id| id.parse().map_err(|_| bad("bad task id"))).collect()
        };
        match kind {
            "queued" => Ok(Notice::Queued(ids(rest)?)),
            "done" => Ok(Notice::Done(ids(rest)?)),
            "cancel" => Ok(Notice::Cancel(rest.parse().map_err(|_| bad("bad task id"))?)),
            "release" => {
                let (task, to) = rest.split_once(':').ok_or_else(|| bad("no replica"))?;
                if to.is_empty() {
                    return Err(bad("no replica"));
                }
                Ok(Notice::Release {
                    task: task.parse().map_err(|_| bad("bad task id"))?,
                    to: to.to_string(),
                })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

/// Appends `prefix` + comma-separated ids, starting a new payload when full.
fn pack(out: &mut Vec<String>, prefix: &str, ids: &[TaskId]) {
    let mut current = String::new();
    for id in ids {
        let id = id.to_string();
        if !current.is_empty() && current.len() + 1 + id.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(prefix);
        } else {
            current.push(',');
        }
        current.push_str(&id);
    }
    if !current.is_empty() {
        out.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_split_long_id_lists() {
        let ids: Vec<TaskId> = (0..500).map(|_| TaskId::new()).collect();
        let to = "0190aa".to_string();
        let notices = vec![
            Notice::Queued(ids.clone()),
            Notice::Done(ids[..2].to_vec()),
            Notice::Cancel(ids[3]),
            Notice::Release { task: ids[4], to: to.clone() },
        ];
        let payloads = Notice::encode_all("r1", &notices);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD), "payloads fit");
        assert!(payloads.len() > 4, "500 ids need several payloads: {}", payloads.len());
        let decoded: Vec<Notice> = payloads
            .iter()
            .map(|p| Notice::decode(p).expect("decodes"))
            .inspect(|(from, _)| assert_eq!(from, "r1"))
            .map(|(_, n)| n)
            .collect();
        let queued: Vec<TaskId> = decoded
            .iter()
            .filter_map(|n| match n {
                Notice::Queued(ids) => Some(ids.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(queued, ids);
        assert!(decoded.contains(&Notice::Done(ids[..2].to_vec())));
        assert!(decoded.contains(&Notice::Cancel(ids[3])));
        assert!(decoded.contains(&Notice::Release { task: ids[4], to }));
        assert!(Notice::encode_all("r1", &[Notice::Queued(vec![])]).is_empty(), "nothing to say, no payload");
    }

    #[test]
    fn malformed_payloads_are_refused_with_the_reason() {
        for (payload, why) in [
            ("queued:", "no sender"),
            ("r1 queued", "no kind"),
            ("r1 queued:nope", "bad task id"),
            ("r1 wake:x", "unknown kind"),
            ("r1 release:0190aa", "no replica"),
        ] {
            let e = Notice::decode(payload).expect_err(payload);
            assert!(e.to_string().contains(why), "{payload}: {e}");
        }
    }
}
