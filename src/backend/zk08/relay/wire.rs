//! ZooKeeper's wire format, as far as the relay reads and writes it: frames,
//! reply headers, the requests it sends itself and their replies, and watch
//! notifications.

use std::io::Read;

use crate::core::{Answer, Mode, Op, Stat, WatchKind};

/// Largest frame passed either way. ZooKeeper's own limit (jute.maxbuffer)
/// is 1 MiB by default; anything far beyond it is garbage, and cuts the link.
pub(super) const MAX_FRAME: usize = 16 << 20;

/// The xid of our first request; ours count down from it. The crate counts
/// up from 1 and the server gives meaning to -1 (notification) and -2
/// (ping); the crate also uses -4 (auth) and -8 (set watches).
pub(crate) const FIRST_XID: i32 = -1001;

/// The xid of a watch notification.
pub(super) const NOTIFICATION_XID: i32 = -1;

/// ZooKeeper opcodes.
/// create2: creates, and answers with the path and the new node's Stat.
pub(super) const OP_CREATE2: i32 = 15;
pub(super) const OP_DELETE: i32 = 2;
pub(super) const OP_EXISTS: i32 = 3;
pub(super) const OP_GET_DATA: i32 = 4;
/// getChildren2: the children and the parent's Stat.
pub(super) const OP_GET_CHILDREN2: i32 = 12;
pub(super) const OP_SYNC: i32 = 9;
pub(super) const OP_REMOVE_WATCHES: i32 = 18;
/// Reply header: xid, zxid, err.
pub(super) const REPLY_HEADER: usize = 16;
/// A serialized Stat: 6 longs and 5 ints (see [`parse_stat`]).
pub(super) const STAT_LEN: usize = 68;

pub(super) struct ReplyHeader {
    pub(super) err: i32,
}

pub(super) fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(i32::from_be_bytes)
}

pub(super) fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(i64::from_be_bytes)
}

pub(super) fn parse_header(body: &[u8]) -> Option<ReplyHeader> {
    be_i64(body, 4)?;
    Some(ReplyHeader {
        err: be_i32(body, 12)?,
    })
}

/// Stat: czxid, mzxid, ctime, mtime (longs), version, cversion, aversion
/// (ints), ephemeralOwner (long), dataLength, numChildren (ints), pzxid (long).
pub(super) fn parse_stat(record: &[u8]) -> Option<Stat> {
    if record.len() < STAT_LEN {
        return None;
    }
    Some(Stat {
        czxid: be_i64(record, 0)?,
        owner: be_i64(record, 44)?,
        ctime: be_i64(record, 16)?,
    })
}

/// Reads one frame (length and body); `None` at the end of the stream, on
/// an error, or for a length out of bounds.
pub(super) fn read_frame(from: &mut impl Read, limit: usize) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let size = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|&n| n <= limit)?;
    let mut frame = vec![0; 4 + size];
    frame.get_mut(..4)?.copy_from_slice(&len);
    from.read_exact(frame.get_mut(4..)?).ok()?;
    Some(frame)
}

/// One entry of the ACL given to created nodes, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AclEntry {
    /// ZooKeeper's permission bits (31: all; 1: read).
    pub(crate) perms: i32,
    pub(crate) scheme: &'static str,
    pub(crate) id: &'static str,
}

/// The client's `path` as the server knows it, under `chroot`.
fn with_chroot(chroot: &str, path: &str) -> String {
    if chroot.is_empty() {
        path.to_owned()
    } else if path == "/" {
        chroot.to_owned()
    } else {
        format!("{chroot}{path}")
    }
}

/// The server's `path` as the client knows it: `chroot` taken off.
pub(super) fn without_chroot(chroot: &str, path: String) -> String {
    if chroot.is_empty() {
        return path;
    }
    match path.strip_prefix(chroot) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => path,
    }
}

fn put_i32(out: &mut Vec<u8>, n: i32) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// A whole frame: `body`'s length, then `body`. `None` if too long.
fn framed(body: &[u8]) -> Option<Vec<u8>> {
    let mut frame = Vec::with_capacity(4 + body.len());
    put_i32(&mut frame, i32::try_from(body.len()).ok()?);
    frame.extend_from_slice(body);
    Some(frame)
}

/// A buffer or string: its length, then its bytes. `None` if too long.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    put_i32(out, i32::try_from(bytes.len()).ok()?);
    out.extend_from_slice(bytes);
    Some(())
}

/// A whole request frame for `op`: length, xid, type, then the record
/// (paths under `chroot`, created nodes with `acl`). `None` for a record too
/// large for the wire format.
pub(super) fn request_frame(chroot: &str, xid: i32, op: &Op, acl: &[AclEntry]) -> Option<Vec<u8>> {
    let (code, path) = match op {
        Op::Create { path, .. } => (OP_CREATE2, path),
        Op::Delete { path } => (OP_DELETE, path),
        Op::Exists { path, .. } => (OP_EXISTS, path),
        Op::Data { path } => (OP_GET_DATA, path),
        Op::Children { path, .. } => (OP_GET_CHILDREN2, path),
        Op::Sync { path } => (OP_SYNC, path),
    };
    let mut body = Vec::with_capacity(64);
    put_i32(&mut body, xid);
    put_i32(&mut body, code);
    put_bytes(&mut body, with_chroot(chroot, path).as_bytes())?;
    match op {
        Op::Create { data, mode, .. } => {
            put_bytes(&mut body, data)?;
            put_i32(&mut body, i32::try_from(acl.len()).ok()?);
            for entry in acl {
                put_i32(&mut body, entry.perms);
                put_bytes(&mut body, entry.scheme.as_bytes())?;
                put_bytes(&mut body, entry.id.as_bytes())?;
            }
            put_i32(
                &mut body,
                match mode {
                    Mode::Persistent => 0,
                    Mode::Ephemeral => 1,
                    Mode::EphemeralSequential => 3,
                },
            );
        }
        Op::Delete { .. } => put_i32(&mut body, -1), // any version
        Op::Exists { watch, .. } | Op::Children { watch, .. } => body.push(u8::from(*watch)),
        Op::Data { .. } => body.push(0),
        Op::Sync { .. } => {}
    }
    framed(&body)
}

/// A removeWatches frame: every watch of the session on `path` (the
/// client's), of any type.
pub(super) fn remove_watches_frame(chroot: &str, xid: i32, path: &str) -> Option<Vec<u8>> {
    let mut body = Vec::with_capacity(32);
    put_i32(&mut body, xid);
    put_i32(&mut body, OP_REMOVE_WATCHES);
    put_bytes(&mut body, with_chroot(chroot, path).as_bytes())?;
    put_i32(&mut body, 3); // WatcherType.Any
    framed(&body)
}

/// Reads the records of a reply in order.
struct Records<'a> {
    body: &'a [u8],
    at: usize,
}

impl Records<'_> {
    fn i32(&mut self) -> Option<i32> {
        let n = be_i32(self.body, self.at)?;
        self.at += 4;
        Some(n)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return Some(Vec::new()); // -1: null
        };
        let bytes = self.body.get(self.at..self.at.checked_add(len)?)?.to_vec();
        self.at += len;
        Some(bytes)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }

    fn stat(&mut self) -> Option<Stat> {
        let stat = parse_stat(self.body.get(self.at..)?)?;
        self.at += STAT_LEN;
        Some(stat)
    }
}

/// The answer in a successful reply `body` (header included) to `op`;
/// `None` if malformed. Paths lose `chroot`.
pub(super) fn parse_answer(chroot: &str, op: &Op, body: &[u8]) -> Option<Answer> {
    let mut records = Records {
        body,
        at: REPLY_HEADER,
    };
    Some(match op {
        Op::Create { .. } => {
            let path = without_chroot(chroot, records.string()?);
            Answer::Created(path, records.stat()?)
        }
        Op::Delete { .. } | Op::Sync { .. } => Answer::Done,
        Op::Exists { .. } => Answer::Stat(Some(records.stat()?)),
        Op::Data { .. } => {
            let data = records.bytes()?;
            Answer::Data(data, records.stat()?)
        }
        Op::Children { .. } => {
            let count = usize::try_from(records.i32()?).unwrap_or(0);
            let mut children = Vec::with_capacity(count.min(body.len() / 4));
            for _ in 0..count {
                children.push(records.string()?);
            }
            Answer::Children(children, records.stat()?.czxid)
        }
    })
}

/// A watch notification's body (header included): the path it fired on
/// (without `chroot`) and what it reports. `None` if malformed, or for an
/// event that reports no change of a node.
pub(super) fn parse_notification(chroot: &str, body: &[u8]) -> Option<(String, WatchKind)> {
    let mut records = Records {
        body,
        at: REPLY_HEADER,
    };
    let kind = match records.i32()? {
        2 => WatchKind::Deleted,         // NodeDeleted
        1 | 3 | 4 => WatchKind::Changed, // NodeCreated, NodeDataChanged, NodeChildrenChanged
        _ => return None,
    };
    let _state = records.i32()?;
    Some((without_chroot(chroot, records.string()?), kind))
}

/// What a server answered to a connect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnectResponse {
    /// The session timeout granted in milliseconds; 0 when the server
    /// refused the session (it expired).
    pub(super) timeout_ms: i32,
    /// The session; 0 when refused.
    pub(super) session_id: i64,
    /// The session's password, which resumes it on another connection.
    pub(super) password: Vec<u8>,
}

/// Reads a ConnectResponse body: protocolVersion, timeOut, sessionId,
/// passwd, and readOnly if present.
pub(super) fn parse_connect_response(body: &[u8]) -> Option<ConnectResponse> {
    let timeout_ms = be_i32(body, 4)?;
    let session_id = be_i64(body, 8)?;
    let len = usize::try_from(be_i32(body, 16)?).unwrap_or(0);
    let password = body.get(20..20usize.checked_add(len)?)?.to_vec();
    Some(ConnectResponse {
        timeout_ms,
        session_id,
        password,
    })
}

/// Rewrites a whole ConnectRequest frame (protocolVersion, lastZxidSeen,
/// timeOut, sessionId, passwd, and readOnly if present) so that it resumes `session_id`
/// with `password`, presenting at least `last_zxid` as the last zxid seen.
/// `None` if the frame is not a ConnectRequest.
pub(super) fn resume_request(
    frame: &[u8],
    session_id: i64,
    password: &[u8],
    last_zxid: i64,
) -> Option<Vec<u8>> {
    let body = frame.get(4..)?;
    let protocol = be_i32(body, 0)?;
    let zxid = be_i64(body, 4)?.max(last_zxid);
    let timeout = be_i32(body, 12)?;
    let old_len = usize::try_from(be_i32(body, 24)?).unwrap_or(0);
    let rest = body.get(28usize.checked_add(old_len)?..)?;
    let mut out = Vec::with_capacity(32 + password.len() + rest.len());
    out.extend_from_slice(&protocol.to_be_bytes());
    out.extend_from_slice(&zxid.to_be_bytes());
    out.extend_from_slice(&timeout.to_be_bytes());
    out.extend_from_slice(&session_id.to_be_bytes());
    out.extend_from_slice(&i32::try_from(password.len()).ok()?.to_be_bytes());
    out.extend_from_slice(password);
    out.extend_from_slice(rest);
    framed(&out)
}

/// The length of the first whole frame at the start of `buffer`, if it
/// holds one; `Err` for a length out of bounds.
pub(super) fn first_frame_len(buffer: &[u8], limit: usize) -> Result<Option<usize>, ()> {
    let Some(len) = be_i32(buffer, 0) else {
        return Ok(None);
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or(())?;
    Ok((buffer.len() >= 4 + len).then_some(4 + len))
}
