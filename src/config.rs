//! What a member needs to know to join: where the ensemble is, which group,
//! how many masters, and how long a session lasts.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The longest span the library counts with: a hundred years. Longer
/// durations (up to [`Duration::MAX`]) saturate to it, so that adding one to
/// an [`Instant`] can never overflow.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + d`, saturating instead of panicking: `d` counts as at most
/// [`FOREVER`], and where the platform's [`Instant`] cannot reach that far the
/// span is halved until it can (down to `now` itself, which no platform
/// needs). Use it for every deadline built from a caller's duration;
/// [`Instant`]`+`[`Duration`] panics on overflow.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    let mut span = d.min(FOREVER);
    loop {
        if let Some(deadline) = now.checked_add(span) {
            return deadline;
        }
        if span.is_zero() {
            return now;
        }
        span /= 2;
    }
}

/// Largest member data accepted: ZooKeeper refuses packets over 1 MiB
/// (`jute.maxbuffer`), and the create request also carries the path and ACL.
///
/// ```
/// use zk_master::{Config, MAX_DATA_LEN};
///
/// assert!(Config::new("127.0.0.1:2181").data(vec![0; MAX_DATA_LEN]).validate().is_ok());
/// assert!(Config::new("127.0.0.1:2181").data(vec![0; MAX_DATA_LEN + 1]).validate().is_err());
/// ```
pub const MAX_DATA_LEN: usize = 1024 * 1024 - 4096;

/// How to join an election. Built with chained setters, checked by
/// [`Config::validate`] and again by [`Election::join`](crate::Election::join).
///
/// Defaults follow the original script: group `/Roles/workers`, prefix
/// `worker`, one master, a 10 s session, data `"1"`.
///
/// ```
/// use std::time::Duration;
/// use zk_master::Config;
///
/// let config = Config::new("127.0.0.1:2181,127.0.0.1:2182/app")
///     .group("/Roles/workers")
///     .masters(2)
///     .session_timeout(Duration::from_secs(6))
///     .data(b"host-a:8080".to_vec());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) connect: String,
    pub(crate) group: String,
    pub(crate) prefix: String,
    pub(crate) masters: usize,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) lease_margin: Option<Duration>,
    pub(crate) data: Vec<u8>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) readable_by_anyone: bool,
    pub(crate) herd_free: bool,
}

/// ZooKeeper digest credentials, `user:password`. Their `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials(pub(crate) String);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.0.split(':').next().unwrap_or_default();
        write!(f, "{user}:***")
    }
}

/// A connect string taken apart: `host:port` entries and an optional chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ensemble {
    pub(crate) hosts: Vec<String>,
    pub(crate) chroot: String,
}

impl Config {
    /// A configuration for the ensemble at `connect`: one or more `host:port`
    /// separated by commas, optionally followed by a chroot such as `/app`.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181");
    /// assert_eq!(config.get_group(), "/Roles/workers");
    /// ```
    #[must_use]
    pub fn new(connect: impl Into<String>) -> Config {
        Config {
            connect: connect.into(),
            group: "/Roles/workers".to_owned(),
            prefix: "worker".to_owned(),
            masters: 1,
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            lease_margin: None,
            data: b"1".to_vec(),
            credentials: None,
            readable_by_anyone: true,
            herd_free: false,
        }
    }

    /// The group path whose children are the members. Parents are created as
    /// persistent nodes when missing. Default `/Roles/workers`.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").group("/services/billing");
    /// assert_eq!(config.get_group(), "/services/billing");
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn group(mut self, path: impl Into<String>) -> Config {
        self.group = path.into();
        self
    }

    /// The name prefix of this member's node; ZooKeeper appends the sequence
    /// number. Default `worker`, giving names such as `worker0000000003`.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").prefix("node-");
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Config {
        self.prefix = prefix.into();
        self
    }

    /// How many members are masters at once: the `n` with the lowest sequence
    /// numbers. Default 1.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").masters(3);
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn masters(mut self, n: usize) -> Config {
        self.masters = n;
        self
    }

    /// Herd-free mode, for large groups. By default every member watches the
    /// whole group, so it learns of every change at once: a slave is told
    /// when the masters change, and [`Election::members`](crate::Election::members)
    /// is always current; but every change wakes every member, which reads the
    /// whole group (the "herd": a takeover in a group of `m` members costs `m`
    /// notifications and `m` reads of `m` names). With `herd_free(true)` a
    /// member watches only the `n` members just ahead of it (`n` =
    /// [`masters`](Self::masters)), as the ZooKeeper recipe and Curator's
    /// `LeaderLatch` do: a member leaving wakes at most the `n` members behind
    /// it, whatever the group's size. The promise is the same in both modes;
    /// what a member does not watch it does not learn of: its masters and
    /// members are as of its last read of the group, and a slave is told of new
    /// masters only when its own place changes. Default `false`.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").herd_free(true);
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn herd_free(mut self, on: bool) -> Config {
        self.herd_free = on;
        self
    }

    /// The session timeout asked of the server, which may grant less or more
    /// (its `minSessionTimeout`..`maxSessionTimeout`). Default 10 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = zk_master::Config::new("127.0.0.1:2181").session_timeout(Duration::from_secs(4));
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn session_timeout(mut self, timeout: Duration) -> Config {
        self.session_timeout = timeout;
        self
    }

    /// How long [`Election::join`](crate::Election::join) tries before it
    /// gives up with [`Error::Unreachable`]. Default 10 s. Anything above a
    /// hundred years counts as a hundred years, so [`Duration::MAX`] means
    /// "keep trying" and never overflows a deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = zk_master::Config::new("127.0.0.1:2181").connect_timeout(Duration::from_secs(2));
    /// assert!(config.validate().is_ok());
    /// assert!(zk_master::Config::new("127.0.0.1:2181").connect_timeout(Duration::MAX).validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn connect_timeout(mut self, timeout: Duration) -> Config {
        // Saturated here, where the value enters: every deadline made from it
        // (`now + connect_timeout`) then fits in an Instant.
        self.connect_timeout = timeout.min(FOREVER);
        self
    }

    /// How long before the server could possibly expire this member's session
    /// [`is_master`](crate::Election::is_master) already turns false. Default:
    /// a tenth of the granted session timeout. It covers the drift of the
    /// clocks and the delay of messages between the servers; a follower cut
    /// off from its leader is covered by the `sync` in every renewal (see the
    /// README's "Guarantees").
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = zk_master::Config::new("127.0.0.1:2181").lease_margin(Duration::from_millis(500));
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn lease_margin(mut self, margin: Duration) -> Config {
        self.lease_margin = Some(margin);
        self
    }

    /// The data stored in this member's node, visible to every member through
    /// [`members`](crate::Election::members). Default `"1"`.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").data(b"10.0.0.7:8080".to_vec());
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn data(mut self, data: Vec<u8>) -> Config {
        self.data = data;
        self
    }

    /// Digest credentials, `user:password`. With them the group path and the
    /// member nodes are created so that only sessions authenticated as this
    /// user may create or delete members (ZooKeeper's `auth` ACL scheme), and
    /// the session authenticates again after every reconnect. Digest
    /// credentials travel in clear text: see the README's "Access control".
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").auth("workers:s3cret");
    /// assert!(config.validate().is_ok());
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn auth(mut self, user_password: impl Into<String>) -> Config {
        self.credentials = Some(Credentials(user_password.into()));
        self
    }

    /// With [`auth`](Self::auth): whether clients without the credentials may
    /// read the group, and so see who is master. Default true. Without
    /// credentials nodes are open to everyone and this has no effect.
    ///
    /// ```
    /// let config = zk_master::Config::new("127.0.0.1:2181").auth("workers:s3cret").readable_by_anyone(false);
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use = "a Config builder method returns the new Config; the old one is moved"]
    pub fn readable_by_anyone(mut self, readable: bool) -> Config {
        self.readable_by_anyone = readable;
        self
    }

    /// The group path this configuration joins.
    ///
    /// ```
    /// assert_eq!(zk_master::Config::new("h:1").get_group(), "/Roles/workers");
    /// ```
    pub fn get_group(&self) -> &str {
        &self.group
    }

    /// Checks every field and names the first bad one. Nothing is sent to any
    /// server.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first unusable field, its value and why.
    ///
    /// # Example
    /// ```
    /// use zk_master::{Config, Error};
    ///
    /// let err = Config::new("127.0.0.1:2181").group("Roles/workers").validate().unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { field: "group", .. }));
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.ensemble()?;
        check_path("group", &self.group)?;
        if self.group == "/" {
            return invalid("group", &self.group, "the root cannot be a group");
        }
        if self.prefix.is_empty() {
            return invalid("prefix", &self.prefix, "must not be empty");
        }
        if let Some(c) = self.prefix.chars().find(|&c| c == '/' || c.is_control()) {
            return invalid("prefix", &self.prefix, &format!("contains {c:?}"));
        }
        if self.masters == 0 {
            return invalid("masters", "0", "at least one master is needed");
        }
        let ms = self.session_timeout.as_millis();
        if ms == 0 || ms > i32::MAX as u128 {
            return invalid(
                "session_timeout",
                &format!("{:?}", self.session_timeout),
                "must be between 1 ms and 2^31 - 1 ms",
            );
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "0s", "must be positive");
        }
        if let Some(margin) = self.lease_margin {
            if margin >= self.session_timeout {
                return invalid(
                    "lease_margin",
                    &format!("{margin:?}"),
                    "must be shorter than the session timeout",
                );
            }
        }
        if let Some(Credentials(secret)) = &self.credentials {
            let shown = format!("{:?}", Credentials(secret.clone()));
            match secret.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {}
                _ => return invalid("auth", &shown, "must be user:password, both non-empty"),
            }
            if secret.chars().any(char::is_control) {
                return invalid("auth", &shown, "contains a control character");
            }
        }
        if self.data.len() > MAX_DATA_LEN {
            return invalid(
                "data",
                &format!("{} bytes", self.data.len()),
                &format!("ZooKeeper takes at most {MAX_DATA_LEN} bytes of node data"),
            );
        }
        Ok(())
    }

    /// The connect string taken apart, or the reason it cannot be used.
    pub(crate) fn ensemble(&self) -> Result<Ensemble> {
        let s = self.connect.as_str();
        let bad = |reason: &str| invalid("connect", s, reason);
        let (hosts, chroot) = match s.find('/') {
            Some(at) => s.split_at(at),
            None => (s, ""),
        };
        if hosts.trim().is_empty() {
            return bad("no host:port given");
        }
        let mut list = Vec::new();
        for entry in hosts.split(',') {
            let Some((host, port)) = entry.rsplit_once(':') else {
                return bad(&format!("{entry:?} has no :port"));
            };
            let host_ok = if let Some(v6) = host.strip_prefix('[') {
                v6.strip_suffix(']')
                    .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
            } else {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            };
            if !host_ok {
                return bad(&format!("{host:?} is not a host name or address"));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return bad(&format!("{port:?} is not a port from 1 to 65535")),
            }
            list.push(entry.to_owned());
        }
        if !chroot.is_empty() && (chroot == "/" || check_path("connect", chroot).is_err()) {
            return bad(&format!(
                "chroot {chroot:?} is not a valid path (no trailing /)"
            ));
        }
        Ok(Ensemble {
            hosts: list,
            chroot: chroot.to_owned(),
        })
    }
}

/// Checks that `path` is a ZooKeeper path this library may use.
fn check_path(field: &'static str, path: &str) -> Result<()> {
    let bad = |reason: &str| invalid(field, path, reason);
    if !path.starts_with('/') {
        return bad("must start with /");
    }
    if path.len() > 1 && path.ends_with('/') {
        return bad("must not end with /");
    }
    if path.contains("//") {
        return bad("must not contain an empty segment (//)");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return bad("must not contain . or .. segments");
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return bad(&format!("contains the control character {c:?}"));
    }
    if path == "/zookeeper" || path.starts_with("/zookeeper/") {
        return bad("/zookeeper is reserved for the server");
    }
    Ok(())
}

fn invalid<T>(field: &'static str, value: &str, reason: &str) -> Result<T> {
    Err(Error::InvalidConfig {
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: Config) -> Option<&'static str> {
        match config.validate() {
            Ok(()) => None,
            Err(Error::InvalidConfig { field, .. }) => Some(field),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn connect_strings() {
        for good in [
            "127.0.0.1:2181",
            "a:1,b:2,c:65535",
            "localhost:2181/app",
            "[::1]:2181/a/b",
            "zk-1.example_x:2181",
        ] {
            assert_eq!(field_of(Config::new(good)), None, "{good}");
        }
        for bad in [
            "",
            ",",
            "/app",
            "host",
            "host:",
            "host:0",
            "host:65536",
            "host:99999",
            "host:abc",
            ":2181",
            "a:1,",
            "h st:1",
            "h:1/app/",
            "h:1/",
            "h:1/a//b",
            "[::1:2181",
            "h:1/zookeeper",
        ] {
            assert_eq!(field_of(Config::new(bad)), Some("connect"), "{bad:?}");
        }
    }

    #[test]
    fn each_field_is_named() {
        let base = || Config::new("127.0.0.1:2181");
        for group in [
            "",
            "Roles",
            "/Roles/",
            "/a//b",
            "/",
            "/zookeeper",
            "/zookeeper/x",
            "/a/./b",
            "/a\nb",
        ] {
            assert_eq!(field_of(base().group(group)), Some("group"), "{group:?}");
        }
        for prefix in ["", "a/b", "x\0"] {
            assert_eq!(
                field_of(base().prefix(prefix)),
                Some("prefix"),
                "{prefix:?}"
            );
        }
        assert_eq!(field_of(base().masters(0)), Some("masters"));
        assert_eq!(
            field_of(base().session_timeout(Duration::ZERO)),
            Some("session_timeout")
        );
        assert_eq!(
            field_of(base().session_timeout(Duration::from_secs(1 << 31))),
            Some("session_timeout")
        );
        assert_eq!(
            field_of(base().connect_timeout(Duration::ZERO)),
            Some("connect_timeout")
        );
        assert_eq!(
            field_of(base().lease_margin(Duration::from_secs(10))),
            Some("lease_margin")
        );
        assert_eq!(
            field_of(base().data(vec![0; MAX_DATA_LEN + 1])),
            Some("data")
        );
        for auth in ["", "user", ":pw", "user:", "us\ner:pw"] {
            assert_eq!(field_of(base().auth(auth)), Some("auth"), "{auth:?}");
        }
        assert_eq!(field_of(base().auth("user:pass:with:colons")), None);
        assert_eq!(field_of(base().data(vec![0; MAX_DATA_LEN])), None);
    }

    #[test]
    fn the_longest_durations_saturate_instead_of_overflowing() {
        let config = Config::new("127.0.0.1:2181").connect_timeout(Duration::MAX);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.connect_timeout, FOREVER);
        let now = Instant::now();
        // What the election thread does with it must not panic.
        let _ = now + config.connect_timeout;
        assert_eq!(deadline_after(now, Duration::MAX), now + FOREVER);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(deadline_after(now, Duration::ZERO), now);
        // Still refused: these are not "very long", they are impossible.
        for bad in [Duration::MAX, Duration::ZERO] {
            assert_eq!(
                field_of(Config::new("h:1").session_timeout(bad)),
                Some("session_timeout")
            );
        }
        assert_eq!(
            field_of(Config::new("h:1").lease_margin(Duration::MAX)),
            Some("lease_margin")
        );
    }

    #[test]
    fn ensemble_keeps_hosts_in_order_and_the_chroot() {
        let e = Config::new("a:1,b:2/app").ensemble().unwrap();
        assert_eq!(e.hosts, ["a:1", "b:2"]);
        assert_eq!(e.chroot, "/app");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_input_is_checked_without_panicking(
                connect in "\\PC{0,40}",
                group in "\\PC{0,20}",
                prefix in "\\PC{0,10}",
                auth in "\\PC{0,10}",
            ) {
                let config = Config::new(connect).group(group).prefix(prefix).auth(auth);
                let typed = match config.validate() {
                    Ok(()) | Err(Error::InvalidConfig { .. }) => true,
                    Err(_) => false,
                };
                prop_assert!(typed);
            }

            #[test]
            fn well_formed_connect_strings_are_taken_apart_exactly(
                hosts in proptest::collection::vec(("[a-z0-9][a-z0-9.-]{0,15}", 1u16..), 1..5),
                chroot in proptest::collection::vec("[a-z0-9_]{1,8}", 0..3),
            ) {
                let hosts: Vec<String> = hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                let chroot: String = chroot.iter().map(|s| format!("/{s}")).collect();
                let ensemble = Config::new(format!("{}{chroot}", hosts.join(","))).ensemble();
                prop_assert_eq!(ensemble, Ok(Ensemble { hosts, chroot }));
            }

            #[test]
            fn ports_outside_1_to_65535_are_refused(port in 65536u32.., host in "[a-z]{1,8}") {
                let refused = Config::new(format!("{host}:{port}")).validate();
                let is_connect_error = matches!(refused, Err(Error::InvalidConfig { field: "connect", .. }));
                prop_assert!(is_connect_error);
            }
        }
    }
}
