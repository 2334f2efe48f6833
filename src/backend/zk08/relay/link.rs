//! One connection of the crate's client through the relay: holding it while
//! no server answers, the handshake, and the frames both ways.

use super::*;

/// One connection of the crate's client, and its connection to a server.
pub(super) struct Link {
    pub(super) number: u64,
    pub(super) down: TcpStream,
    pub(super) up: TcpStream,
    /// Everything sent to the server goes through here, a frame at a time.
    pub(super) writer: Mutex<TcpStream>,
    /// The server accepted the session: requests of ours may go out.
    pub(super) ready: AtomicBool,
    /// Our requests waiting for their reply; `None` once the link is closed.
    pub(super) waiting: Mutex<Option<HashMap<i32, Waiting>>>,
}

pub(super) struct Waiting {
    pub(super) op: Op,
    pub(super) done: Done,
}

impl Link {
    /// Writes one whole frame to the server.
    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.writer.lock().write_all(frame)
    }

    /// Closes both connections and fails every request still waiting.
    pub(super) fn close(&self) {
        self.ready.store(false, Ordering::SeqCst);
        shut(&self.down, &self.up);
        let waiting = self.waiting.lock().take();
        for (_, w) in waiting.into_iter().flatten() {
            (w.done)(InjectedReply::Unanswered {
                link: Some(self.number),
                why: "the connection closed",
            });
        }
    }

    /// Hands a reply of ours to its callback. Err: the reply is malformed.
    fn answer(&self, chroot: &str, xid: i32, body: &[u8]) -> Result<(), ()> {
        let header = parse_header(body).ok_or(())?;
        let Some(w) = self.waiting.lock().as_mut().and_then(|m| m.remove(&xid)) else {
            return Ok(()); // not waited for (any more): drop it
        };
        let answer = if header.err == 0 {
            match parse_answer(chroot, &w.op, body) {
                Some(answer) => Some(answer),
                None => {
                    // Put it back so closing the link fails it.
                    if let Some(m) = self.waiting.lock().as_mut() {
                        m.insert(xid, w);
                    }
                    return Err(());
                }
            }
        } else {
            None
        };
        (w.done)(InjectedReply::Answered {
            link: self.number,
            err: header.err,
            answer,
        });
        Ok(())
    }
}

/// Serves one connection of the crate's client until either side closes.
pub(super) fn link(down: TcpStream, inner: Arc<Inner>) {
    let _ = down.set_nodelay(true);
    let Some((up, response, pending)) = hold(&down, &inner) else {
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    let Some(answer) = parse_connect_response(response.get(4..).unwrap_or_default()) else {
        log::warn!("relay: a server sent a malformed connect response");
        return shut(&down, &up);
    };
    // Reported before the crate sees it, so an expired session is known
    // before the crate can act on it.
    (inner.on_handshake)(Handshake {
        session_id: answer.session_id,
        timeout_ms: answer.timeout_ms,
    });
    let granted = answer.timeout_ms > 0 && answer.session_id != 0;
    if granted {
        let mut session = inner.session.lock();
        if session.is_none() {
            *session = Some((answer.session_id, answer.password));
        }
    } else {
        // Expired: the crate would open a new session next; connect nowhere.
        inner.held_off.store(true, Ordering::SeqCst);
    }
    let mut down_write = match down.try_clone() {
        Ok(d) if granted => d,
        Ok(mut d) => {
            let _ = d.write_all(&response);
            return shut(&down, &up);
        }
        Err(_) => return shut(&down, &up),
    };
    if down_write.write_all(&response).is_err() {
        return shut(&down, &up);
    }
    let (Ok(down_read), Ok(up_write), Ok(up_read), Ok(down_kept), Ok(up_kept)) = (
        down.try_clone(),
        up.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return shut(&down, &up);
    };
    let number = inner.link_numbers.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link {
        number,
        down: down_kept,
        up: up_kept,
        writer: Mutex::new(up_write),
        ready: AtomicBool::new(true),
        waiting: Mutex::new(Some(HashMap::new())),
    });
    {
        let mut links = inner.links.lock();
        if inner.stopped.load(Ordering::SeqCst) || inner.held_off.load(Ordering::SeqCst) {
            return shut(&down, &up);
        }
        links.push(link.clone());
    }
    let replies_inner = inner.clone();
    let replies_link = link.clone();
    let replies = thread::Builder::new()
        .name("zk-master-relay-replies".into())
        .spawn(move || server_to_client(up_read, down_write, &replies_inner, &replies_link));
    if let Ok(replies) = replies {
        client_to_server(Cursor::new(pending).chain(down_read), &link);
        let _ = replies.join();
    }
    link.close();
    shut(&down, &up);
    inner.links.lock().retain(|l| l.number != number);
}

/// Reads the crate's connect request and presents it to the servers until
/// one answers, holding the crate's connection quietly meanwhile (a hang-up
/// would make the crate log a warning and retry at once). `None` once the
/// crate hangs up, or the relay stops. Returns the server's connection, its
/// connect response, and what the crate sent behind its connect request.
fn hold(down: &TcpStream, inner: &Inner) -> Option<(TcpStream, Vec<u8>, Vec<u8>)> {
    let mut down = down;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    let asked = Instant::now();
    let mut next_try = asked;
    down.set_read_timeout(Some(RETRY_PAUSE)).ok()?;
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return None;
        }
        let request_len = first_frame_len(&pending, MAX_HANDSHAKE).ok()?;
        let now = Instant::now();
        match request_len {
            None if now.duration_since(asked) > REQUEST_WAIT => return None,
            Some(len) if now >= next_try && !inner.held_off.load(Ordering::SeqCst) => {
                if let Some((up, response)) = pending.get(..len).and_then(|r| inner.handshake(r)) {
                    let _ = up.set_nodelay(true);
                    down.set_read_timeout(None).ok()?;
                    pending.drain(..len);
                    return Some((up, response, pending));
                }
                next_try = Instant::now() + RETRY_PAUSE;
            }
            _ => {}
        }
        match down.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                pending.extend_from_slice(chunk.get(..n)?);
                if pending.len() > MAX_PENDING {
                    return None;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

/// Passes the crate's frames to the server, each whole under the writer
/// lock, until either side closes; then closes the link.
fn client_to_server(down: impl Read, link: &Link) {
    let mut down = BufReader::new(down);
    while let Some(frame) = read_frame(&mut down, MAX_FRAME) {
        if link.send(&frame).is_err() {
            log::debug!(
                "relay: link {} cut: a write to the server failed",
                link.number
            );
            break;
        }
    }
    link.close();
}

/// Passes the server's replies to the crate and takes ours out, noting the
/// highest zxid (presented on the next connection).
fn server_to_client(up: TcpStream, mut down: TcpStream, inner: &Inner, link: &Link) {
    let mut up = BufReader::new(up);
    while let Some(frame) = read_frame(&mut up, MAX_FRAME) {
        let body = frame.get(4..).unwrap_or_default();
        let Some(xid) = be_i32(body, 0) else {
            log::warn!("relay: link {} cut: a reply without a header", link.number);
            break;
        };
        if let Some(zxid) = be_i64(body, 4).filter(|&z| z > 0) {
            inner.last_zxid.fetch_max(zxid, Ordering::SeqCst);
        }
        if xid <= FIRST_XID {
            if link.answer(&inner.chroot, xid, body).is_err() {
                log::warn!("relay: link {} cut: a malformed reply to us", link.number);
                break;
            }
        } else if xid == NOTIFICATION_XID {
            match parse_notification(&inner.chroot, body) {
                Some((path, kind)) => (inner.on_watch)(path, kind),
                None => log::debug!("relay: a notification without a change of a node"),
            }
        } else if down.write_all(&frame).is_err() {
            break;
        }
    }
    link.close();
}

fn shut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}
