//! Which children of the group are members, and in what order.
//!
//! ZooKeeper appends to a sequential node's name a ten-character counter,
//! `%010d` of a signed 32-bit number kept per parent node. A child is a member
//! when its name ends in such a suffix, whatever comes before it, so clients
//! that use another prefix (the original script's `worker`, kazoo's
//! `<uuid>__lock__`) take part and order correctly. Members are ordered by that
//! number, then by name; any other child is ignored.

/// One member of the group: a child node whose name ends in a sequence number.
///
/// ```
/// use zk_master::Member;
///
/// let m = Member::parse("worker0000000007", b"1".to_vec()).unwrap();
/// assert_eq!(m.sequence(), 7);
/// assert!(Member::parse("not-a-member", Vec::new()).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    name: String,
    sequence: i32,
    data: Vec<u8>,
    /// The session that owns the node (its ephemeral owner); 0 if unknown.
    session: i64,
    /// The node's creation time in ms since the Unix epoch; 0 if unknown.
    created_ms: i64,
}

/// Length of the counter ZooKeeper appends to a sequential node's name.
const SUFFIX_LEN: usize = 10;

impl Member {
    /// A member named `name` with `data`, or `None` if the name has no
    /// sequence suffix.
    ///
    /// ```
    /// use zk_master::Member;
    ///
    /// let wrapped = Member::parse("x-000000001", Vec::new()).unwrap();
    /// assert_eq!(wrapped.sequence(), -1);
    /// ```
    pub fn parse(name: &str, data: Vec<u8>) -> Option<Member> {
        sequence_of(name).map(|sequence| Member {
            name: name.to_owned(),
            sequence,
            data,
            session: 0,
            created_ms: 0,
        })
    }

    /// This member with what its node's stat says: its owner session and
    /// creation time.
    pub(crate) fn with_stat(self, session: i64, created_ms: i64) -> Member {
        Member {
            session,
            created_ms,
            ..self
        }
    }

    /// The node's name, without the group path.
    ///
    /// ```
    /// let m = zk_master::Member::parse("worker0000000001", Vec::new()).unwrap();
    /// assert_eq!(m.name(), "worker0000000001");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sequence number ZooKeeper gave the node.
    ///
    /// ```
    /// let m = zk_master::Member::parse("worker0000000042", Vec::new()).unwrap();
    /// assert_eq!(m.sequence(), 42);
    /// ```
    pub fn sequence(&self) -> i32 {
        self.sequence
    }

    /// The data the member registered with (the example worker uses `"1"`).
    ///
    /// ```
    /// let m = zk_master::Member::parse("worker0000000001", b"1".to_vec()).unwrap();
    /// assert_eq!(m.data(), b"1");
    /// ```
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The id of the ZooKeeper session that owns the member's node (its
    /// ephemeral owner), as read from the group; `None` for a member made
    /// with [`parse`](Self::parse). Two members with the same session id are
    /// the same process.
    ///
    /// ```
    /// let m = zk_master::Member::parse("worker0000000001", Vec::new()).unwrap();
    /// assert_eq!(m.session_id(), None);
    /// ```
    pub fn session_id(&self) -> Option<i64> {
        (self.session != 0).then_some(self.session)
    }

    /// When the member's node was created, by the clock of the ZooKeeper
    /// server that created it; `None` for a member made with
    /// [`parse`](Self::parse).
    ///
    /// ```
    /// let m = zk_master::Member::parse("worker0000000001", Vec::new()).unwrap();
    /// assert_eq!(m.created(), None);
    /// ```
    pub fn created(&self) -> Option<std::time::SystemTime> {
        let ms = u64::try_from(self.created_ms).ok().filter(|&ms| ms > 0)?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))
    }
}

/// The sequence number at the end of `name`, if it has one.
pub(crate) fn sequence_of(name: &str) -> Option<i32> {
    // `%010d` needs eleven characters below -999999999, after the counter wrapped.
    let wide = name
        .len()
        .checked_sub(SUFFIX_LEN + 1)
        .and_then(|split| name.get(split..))
        .filter(|s| s.starts_with('-') && s.bytes().skip(1).all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&n| n <= -1_000_000_000);
    if wide.is_some() {
        return wide;
    }
    let split = name.len().checked_sub(SUFFIX_LEN)?;
    let suffix = name.get(split..)?;
    let digits = suffix.strip_prefix('-').unwrap_or(suffix);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}

/// The member names among `children`, in election order.
pub(crate) fn in_election_order(children: Vec<String>) -> Vec<String> {
    let mut members: Vec<(i32, String)> = children
        .into_iter()
        .filter_map(|name| sequence_of(&name).map(|seq| (seq, name)))
        .collect();
    members.sort();
    members.into_iter().map(|(_, name)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_ten_characters_of_a_signed_number() {
        assert_eq!(sequence_of("worker0000000003"), Some(3));
        assert_eq!(sequence_of("0000000003"), Some(3));
        assert_eq!(sequence_of("a2147483647"), Some(i32::MAX));
        assert_eq!(sequence_of("a-2147483648"), Some(i32::MIN));
        assert_eq!(sequence_of("-2147483648"), Some(i32::MIN));
        assert_eq!(sequence_of("r-0000000005"), Some(5), "prefix r-, not -5");
        assert_eq!(sequence_of("x-000000005"), Some(-5));
        assert_eq!(sequence_of("worker"), None);
        assert_eq!(sequence_of("worker000000003"), None, "only 9 digits");
        assert_eq!(sequence_of("worker00000000+3"), None);
        assert_eq!(sequence_of("w4294967295"), None, "out of i32 range");
        assert_eq!(sequence_of("ünï0000000001"), Some(1));
        assert_eq!(
            sequence_of("ü000000001"),
            None,
            "no panic on a char boundary"
        );
    }

    #[test]
    fn order_is_by_sequence_then_name_ignoring_non_members() {
        let children = [
            "b0000000002",
            "lock",
            "a0000000003",
            "c0000000001",
            "z-000000001",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            in_election_order(children),
            ["z-000000001", "c0000000001", "b0000000002", "a0000000003"]
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// The name ZooKeeper gives a sequential node: `%010d` of the counter.
        fn zookeeper_name(prefix: &str, sequence: i32) -> String {
            format!("{prefix}{sequence:010}")
        }

        proptest! {
            #[test]
            fn the_sequence_is_read_back_for_any_prefix_not_ending_in_a_dash(
                prefix in "[a-zA-Z_0-9.]{0,12}",
                sequence in any::<i32>(),
            ) {
                prop_assert_eq!(sequence_of(&zookeeper_name(&prefix, sequence)), Some(sequence));
            }

            #[test]
            fn election_order_is_sequence_order_whatever_the_prefixes(
                members in proptest::collection::btree_map(any::<i32>(), "[a-z_]{0,6}", 0..40),
                strangers in proptest::collection::vec("[a-z-]{0,9}", 0..10),
            ) {
                let mut children: Vec<String> =
                    members.iter().map(|(seq, prefix)| zookeeper_name(prefix, *seq)).collect();
                children.extend(strangers);
                children.reverse();
                let expected: Vec<String> =
                    members.iter().map(|(seq, prefix)| zookeeper_name(prefix, *seq)).collect();
                prop_assert_eq!(in_election_order(children), expected);
            }

            #[test]
            fn any_name_parses_without_panicking(name in "\\PC{0,20}") {
                let _ = Member::parse(&name, Vec::new());
            }
        }
    }
}
