//! Consumer group offsets carried from a source to the target: for each selected group that has
//! no members at the target, its committed offsets on mirrored topics are committed there under
//! the target topic names. With offset-preserving mirroring the offsets need no translation;
//! in translating mode each goes through the exact offset map, and one the map cannot place yet
//! (records below it not all copied) waits for a later sync. Either way a group that moves
//! regions resumes exactly where it stood.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::cluster::{Cluster, ClusterError};

/// The offsets last written per group, so unchanged ones are not committed again.
pub type Synced = HashMap<String, BTreeMap<(String, i32), i64>>;

/// Where a source offset lands at the target: (target topic, partition, source offset).
pub type Translate<'a> = &'a (dyn Fn(&str, i32, i64) -> Option<i64> + Sync);

/// Syncs every selected group; `topics` maps source topic names to target names. Returns how
/// many groups had offsets committed.
pub async fn sync(
    source: &Cluster,
    target: &Cluster,
    selection: &[Regex],
    topics: &BTreeMap<String, String>,
    translate: Translate<'_>,
    synced: &mut Synced,
) -> Result<usize, ClusterError> {
    let mut committed = 0;
    for group in source.list_groups().await?.into_keys() {
        if !selection.is_empty() && !selection.iter().any(|r| r.is_match(&group)) {
            continue;
        }
        let offsets: BTreeMap<(String, i32), i64> = source
            .committed(&group)
            .await?
            .into_iter()
            .filter_map(|((t, p), o)| {
                let tt = topics.get(&t)?;
                Some(((tt.clone(), p), translate(tt, p, o)?))
            })
            .collect();
        if offsets.is_empty() || synced.get(&group) == Some(&offsets) {
            continue;
        }
        if target.group_active(&group).await? {
            tracing::debug!(group, "group has members at the target: offsets not synced");
            continue;
        }
        target.commit(&group, &offsets).await?;
        tracing::debug!(group, partitions = offsets.len(), "group offsets synced");
        synced.insert(group, offsets);
        committed += 1;
    }
    Ok(committed)
}
