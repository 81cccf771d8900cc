//! Every extended attribute name with a meaning to Mortar, as stored on a
//! brick, in one place: the brick's own (gfid, volume id), replicate's
//! changelog, disperse's version record, distribute's layout and link files.
//! Changing one of these strings changes the on-disk format.

/// The object's gfid (read-only to clients).
pub const GFID: &str = "trusted.mortar.gfid";
/// On the brick root: the volume the brick belongs to (read-only).
pub const VOLUME_ID: &str = "trusted.mortar.volume-id";
/// Prefix of changelog counters (one key per brick being blamed).
pub const CHANGELOG_PREFIX: &str = "trusted.mortar.changelog.";
/// The dirty marker raised around a write.
pub const DIRTY: &str = "trusted.mortar.dirty";
/// Prefix of everything Mortar keeps in xattrs.
pub const MORTAR_PREFIX: &str = "trusted.mortar.";
/// Prefix of ordinary user xattrs.
pub const USER_PREFIX: &str = "user.";

/// Counters that put a file in the pending-heal index when non-zero.
pub fn is_changelog(name: &str) -> bool {
    name == DIRTY || name.starts_with(CHANGELOG_PREFIX)
}

/// Distribute: a directory's hash range on this subvolume.
pub const DHT_LAYOUT: &str = "trusted.mortar.dht";
/// Distribute: on a link file, the subvolume that holds the data.
pub const DHT_LINKTO: &str = "trusted.mortar.dht.linkto";
/// Disperse: `[data version, metadata version, size]` of a fragment.
pub const EC_VERSION: &str = "trusted.mortar.ec";

/// Replicate: the changelog key by which a brick blames the brick that
/// its client layer calls `client_name` (`<volume>-client-<j>`).
pub fn changelog_key(client_name: &str) -> String {
    format!("{CHANGELOG_PREFIX}{client_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_under_the_mortar_prefix() {
        for n in [
            GFID,
            VOLUME_ID,
            CHANGELOG_PREFIX,
            DIRTY,
            DHT_LAYOUT,
            DHT_LINKTO,
            EC_VERSION,
        ] {
            assert!(n.starts_with(MORTAR_PREFIX), "{n}");
        }
        assert_eq!(
            changelog_key("vol-client-2"),
            "trusted.mortar.changelog.vol-client-2"
        );
        assert!(is_changelog(&changelog_key("v-client-0")));
    }
}
