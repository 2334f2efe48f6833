//! A raw ZooKeeper session handshake on a socket of our own.
//!
//! The `zookeeper` crate does not say which session timeout the server
//! granted, connects before any server is known to answer, and spins a core
//! while none does. One handshake with a deadline answers all three: the
//! server is up and serving, and it grants this timeout to a session that asks
//! for the same one. The probe session is closed at once.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Opcode of ZooKeeper's closeSession request.
const CLOSE_SESSION: i32 = -11;

/// Connects to `host` (`name:port`), asks for a session of `requested`, and
/// returns the timeout the server granted. Gives up at `deadline`.
pub(crate) fn granted_timeout(
    host: &str,
    requested: Duration,
    deadline: Instant,
) -> io::Result<Duration> {
    let addr = resolve(host)?;
    let mut stream = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    stream.set_nodelay(true)?;
    let requested_ms = i32::try_from(requested.as_millis()).unwrap_or(i32::MAX);

    // ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly.
    let mut body = Vec::with_capacity(45);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&requested_ms.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0; 16]);
    body.push(0);
    send_frame(&mut stream, &body, deadline)?;

    // ConnectResponse: protocolVersion, timeOut, sessionId, passwd, [readOnly].
    let reply = read_frame(&mut stream, deadline)?;
    let granted_ms = reply
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or_else(|| malformed("short ConnectResponse"))?;
    if granted_ms <= 0 {
        return Err(malformed("the server refused the session"));
    }

    // Close the probe session so it does not linger for a whole timeout.
    let mut close = Vec::with_capacity(8);
    close.extend_from_slice(&1i32.to_be_bytes());
    close.extend_from_slice(&CLOSE_SESSION.to_be_bytes());
    if send_frame(&mut stream, &close, deadline).is_ok() {
        let _ = read_frame(&mut stream, deadline);
    }
    Ok(Duration::from_millis(granted_ms as u64))
}

fn resolve(host: &str) -> io::Result<SocketAddr> {
    host.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake deadline passed",
        ));
    }
    Ok(left)
}

fn send_frame(stream: &mut TcpStream, body: &[u8], deadline: Instant) -> io::Result<()> {
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let len = i32::try_from(body.len()).map_err(|_| malformed("frame too long"))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

fn read_frame(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut len = [0; 4];
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len)).map_err(|_| malformed("negative length"))?;
    if len > 4096 {
        return Err(malformed("reply frame too long"));
    }
    let mut body = vec![0; len];
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.read_exact(&mut body)?;
    Ok(body)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
