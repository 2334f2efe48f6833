//! ZooKeeper's wire format, as far as the relay reads and writes it: frames,
//! reply headers, the Stat of an `exists`, and the requests it sends itself.

use std::io::Read;

use crate::core::Stat;

/// Largest frame passed either way. ZooKeeper's own limit (jute.maxbuffer)
/// is 1 MiB by default; anything far beyond it is garbage, and cuts the link.
pub(super) const MAX_FRAME: usize = 16 << 20;

/// The xid of our first request; ours count down from it. The crate counts
/// up from 1 and the server gives meaning to -1 (notification) and -2
/// (ping); the crate also uses -4 (auth) and -8 (set watches).
pub(crate) const FIRST_XID: i32 = -1001;

/// ZooKeeper opcodes.
pub(super) const OP_EXISTS: i32 = 3;
pub(super) const OP_SYNC: i32 = 9;
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

/// A whole request frame: length, xid, type, path (with the chroot),
/// and the watch flag if any.
pub(super) fn request_frame(
    chroot: &str,
    xid: i32,
    op: i32,
    path: &str,
    watch: Option<bool>,
) -> Vec<u8> {
    let full = if chroot.is_empty() {
        path.to_owned()
    } else if path == "/" {
        chroot.to_owned()
    } else {
        format!("{chroot}{path}")
    };
    let mut body = Vec::with_capacity(16 + full.len());
    body.extend_from_slice(&xid.to_be_bytes());
    body.extend_from_slice(&op.to_be_bytes());
    body.extend_from_slice(&(full.len() as i32).to_be_bytes());
    body.extend_from_slice(full.as_bytes());
    if let Some(watch) = watch {
        body.push(u8::from(watch));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
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
/// passwd, [readOnly].
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
/// timeOut, sessionId, passwd, [readOnly]) so that it resumes `session_id`
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
    let mut frame = Vec::with_capacity(4 + out.len());
    frame.extend_from_slice(&i32::try_from(out.len()).ok()?.to_be_bytes());
    frame.extend_from_slice(&out);
    Some(frame)
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
