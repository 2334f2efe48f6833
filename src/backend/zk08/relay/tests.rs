use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use super::wire::{OP_EXISTS, OP_SYNC};
use super::*;
use crate::core::Stat;

const SESSION: i64 = 0x1234;
const CZXID: i64 = 7;
const SOON: Duration = Duration::from_secs(2);

/// A request as the fake server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    xid: i32,
    op: i32,
    path: String,
}

fn ustring(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
    out.extend_from_slice(s);
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

fn reply_header(xid: i32, err: i32) -> Vec<u8> {
    let mut body = xid.to_be_bytes().to_vec();
    body.extend_from_slice(&5i64.to_be_bytes());
    body.extend_from_slice(&err.to_be_bytes());
    body
}

/// The reply the fake server sends to the client's own request.
fn own_reply(xid: i32, path: &str) -> Vec<u8> {
    let mut body = reply_header(xid, 0);
    body.extend_from_slice(format!("reply to {path}").as_bytes());
    framed(&body)
}

/// A fake ZooKeeper server: answers the connect request, then the
/// client's requests with `own_reply`, and ours as a server would,
/// except for paths ending in `/silent` (no answer), `/drop` (hangs up),
/// `/huge`, `/negative`, `/short`, `/badstat` (malformed replies),
/// `/missing` (NoNode). Every request read is reported, in order.
fn fake_server() -> (String, Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (seen_tx, seen) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen_tx = seen_tx.clone();
            thread::spawn(move || serve(stream, &seen_tx));
        }
    });
    (addr, seen)
}

fn serve(mut stream: TcpStream, seen: &mpsc::Sender<Seen>) {
    if read_frame(&mut stream, MAX_FRAME).is_none() {
        return;
    }
    let mut response = 0i32.to_be_bytes().to_vec();
    response.extend_from_slice(&4000i32.to_be_bytes());
    response.extend_from_slice(&SESSION.to_be_bytes());
    ustring(&mut response, &[9; 16]);
    response.push(0);
    if stream.write_all(&framed(&response)).is_err() {
        return;
    }
    while let Some(frame) = read_frame(&mut stream, MAX_FRAME) {
        let body = frame.get(4..).unwrap_or_default();
        let xid = be_i32(body, 0).expect("xid");
        let op = be_i32(body, 4).expect("type");
        let path = be_i32(body, 8)
            .and_then(|n| body.get(12..12 + usize::try_from(n).ok()?))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let _ = seen.send(Seen {
            xid,
            op,
            path: path.clone(),
        });
        let reply = if xid > FIRST_XID {
            own_reply(xid, &path)
        } else if path.ends_with("/silent") {
            continue;
        } else if path.ends_with("/drop") {
            return;
        } else if path.ends_with("/huge") {
            i32::MAX.to_be_bytes().to_vec()
        } else if path.ends_with("/negative") {
            (-5i32).to_be_bytes().to_vec()
        } else if path.ends_with("/short") {
            framed(&xid.to_be_bytes()[..2])
        } else if path.ends_with("/badstat") {
            let mut body = reply_header(xid, 0);
            body.extend_from_slice(&[0; 10]);
            framed(&body)
        } else if path.ends_with("/missing") {
            framed(&reply_header(xid, -101))
        } else if path.ends_with("/notify") {
            // Answered as missing, then a notification that it was deleted
            // (xid -1, type NodeDeleted, state SyncConnected).
            let mut event = reply_header(-1, 0);
            event.extend_from_slice(&2i32.to_be_bytes());
            event.extend_from_slice(&3i32.to_be_bytes());
            ustring(&mut event, path.as_bytes());
            [framed(&reply_header(xid, -101)), framed(&event)].concat()
        } else if op == OP_SYNC {
            let mut body = reply_header(xid, 0);
            ustring(&mut body, path.as_bytes());
            framed(&body)
        } else {
            let mut body = reply_header(xid, 0);
            for long in [CZXID, 8, 9, 10] {
                body.extend_from_slice(&long.to_be_bytes());
            }
            body.extend_from_slice(&[0; 12]);
            body.extend_from_slice(&SESSION.to_be_bytes());
            body.extend_from_slice(&[0; 16]);
            framed(&body)
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

fn relay(server: &str, chroot: &str) -> Relay {
    watching_relay(server, chroot, Box::new(|_, _| {}))
}

fn watching_relay(server: &str, chroot: &str, on_watch: WatchSink) -> Relay {
    Relay::start(
        vec![server.to_owned()],
        0,
        chroot,
        Vec::new(),
        Box::new(|_| {}),
        on_watch,
    )
    .expect("relay")
}

/// Connects as the crate would, and waits for the relay to take
/// requests of ours on that connection.
fn client(relay: &Relay) -> TcpStream {
    let mut stream = ask_new_session(relay);
    let response = read_frame(&mut stream, MAX_FRAME).expect("connect response");
    assert_eq!(be_i64(&response, 12), Some(SESSION));
    let deadline = Instant::now() + SOON;
    while !relay
        .inner
        .links
        .lock()
        .iter()
        .any(|l| l.ready.load(Ordering::SeqCst))
    {
        assert!(Instant::now() < deadline, "the link never got ready");
        thread::sleep(Duration::from_millis(1));
    }
    stream
}

fn own_request(xid: i32, path: &str) -> Vec<u8> {
    let mut body = xid.to_be_bytes().to_vec();
    body.extend_from_slice(&4i32.to_be_bytes()); // getData
    ustring(&mut body, path.as_bytes());
    body.push(0);
    framed(&body)
}

fn send(relay: &Relay, op: Op) -> Receiver<InjectedReply> {
    let (tx, rx) = mpsc::channel();
    relay.request(
        op,
        Box::new(move |reply| {
            let _ = tx.send(reply);
        }),
    );
    rx
}

fn exists(path: &str) -> Op {
    Op::Exists {
        path: path.into(),
        watch: false,
    }
}

fn sync(path: &str) -> Op {
    Op::Sync { path: path.into() }
}

fn seen(seen: &Receiver<Seen>) -> Seen {
    seen.recv_timeout(SOON).expect("a request at the server")
}

/// The client sees no more bytes, and (if `closed`) the end of stream.
fn assert_quiet(client: &mut TcpStream, closed: bool) {
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => assert!(closed, "the link closed"),
        Ok(_) => panic!("unexpected bytes reached the client"),
        Err(e) => assert!(
            !closed
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
            "{e}"
        ),
    }
}

#[test]
fn injected_replies_never_reach_the_client_and_order_is_kept() {
    let (server, seen_rx) = fake_server();
    let relay = relay(&server, "");
    let mut client = client(&relay);
    client.write_all(&own_request(1, "/a")).expect("write");
    assert_eq!(seen(&seen_rx).xid, 1);
    let synced = send(&relay, sync("/m"));
    let renewed = send(&relay, exists("/m"));
    let missing = send(&relay, exists("/missing"));
    client.write_all(&own_request(2, "/b")).expect("write");
    // A ping: xid -2, type 11, no record.
    let ping = framed(&[(-2i32).to_be_bytes(), 11i32.to_be_bytes()].concat());
    client.write_all(&ping).expect("write");
    let order: Vec<(i32, i32)> = (0..5)
        .map(|_| seen(&seen_rx))
        .map(|s| (s.xid, s.op))
        .collect();
    assert_eq!(
        order,
        [
            (-1001, OP_SYNC),
            (-1002, OP_EXISTS),
            (-1003, OP_EXISTS),
            (2, 4),
            (-2, 11)
        ]
    );
    assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(1, "/a")));
    assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(2, "/b")));
    assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(-2, "")));
    assert_quiet(&mut client, false);
    let answered = |answer| InjectedReply::Answered {
        link: 0,
        err: 0,
        answer: Some(answer),
    };
    assert_eq!(synced.recv_timeout(SOON), Ok(answered(Answer::Done)));
    let stat = Stat {
        owner: SESSION,
        czxid: CZXID,
        ctime: 9,
    };
    assert_eq!(
        renewed.recv_timeout(SOON),
        Ok(answered(Answer::Stat(Some(stat))))
    );
    assert_eq!(
        missing.recv_timeout(SOON),
        Ok(InjectedReply::Answered {
            link: 0,
            err: -101,
            answer: None
        })
    );
}

#[test]
fn a_request_goes_out_between_whole_frames() {
    let (server, seen_rx) = fake_server();
    let relay = relay(&server, "");
    let mut client = client(&relay);
    let frame = own_request(1, "/a/long/enough/path");
    let (first, rest) = frame.split_at(9);
    client.write_all(first).expect("write");
    thread::sleep(Duration::from_millis(50));
    let renewed = send(&relay, exists("/m"));
    client.write_all(rest).expect("write");
    assert_eq!(
        seen(&seen_rx),
        Seen {
            xid: -1001,
            op: OP_EXISTS,
            path: "/m".into()
        }
    );
    assert_eq!(
        seen(&seen_rx),
        Seen {
            xid: 1,
            op: 4,
            path: "/a/long/enough/path".into()
        }
    );
    assert!(matches!(
        renewed.recv_timeout(SOON),
        Ok(InjectedReply::Answered { err: 0, .. })
    ));
    assert_eq!(
        read_frame(&mut client, MAX_FRAME),
        Some(own_reply(1, "/a/long/enough/path"))
    );
    assert_quiet(&mut client, false);
}

#[test]
fn a_request_without_a_link_fails_at_once() {
    let (server, _seen) = fake_server();
    let relay = relay(&server, "");
    let reply = send(&relay, exists("/m"));
    assert_eq!(
        reply.try_recv(),
        Ok(InjectedReply::Unanswered {
            link: None,
            why: "not connected"
        })
    );
}

#[test]
fn a_cut_fails_waiting_requests_at_once() {
    let (server, seen_rx) = fake_server();
    let relay = relay(&server, "");
    let mut client = client(&relay);
    let waiting = send(&relay, sync("/silent"));
    seen(&seen_rx);
    let start = Instant::now();
    relay.cut();
    assert!(matches!(
        waiting.recv_timeout(SOON),
        Ok(InjectedReply::Unanswered { link: Some(0), .. })
    ));
    assert!(start.elapsed() < Duration::from_millis(200));
    assert_quiet(&mut client, true);
    let reply = send(&relay, exists("/m"));
    assert!(matches!(
        reply.try_recv(),
        Ok(InjectedReply::Unanswered { link: None, .. })
    ));
}

#[test]
fn a_server_hanging_up_fails_waiting_requests() {
    let (server, _seen) = fake_server();
    let relay = relay(&server, "");
    let mut client = client(&relay);
    let waiting = send(&relay, exists("/silent"));
    let dropped = send(&relay, exists("/drop"));
    for reply in [waiting, dropped] {
        assert!(matches!(
            reply.recv_timeout(SOON),
            Ok(InjectedReply::Unanswered { link: Some(0), .. })
        ));
    }
    assert_quiet(&mut client, true);
}

#[test]
fn a_malformed_reply_cuts_the_link() {
    let (server, _seen) = fake_server();
    let relay = relay(&server, "");
    for path in ["/huge", "/negative", "/short", "/badstat"] {
        let mut client = client(&relay);
        let reply = send(&relay, exists(path));
        assert!(
            matches!(
                reply.recv_timeout(SOON),
                Ok(InjectedReply::Unanswered { .. })
            ),
            "{path}"
        );
        assert_quiet(&mut client, true);
    }
    // The relay still serves the next connection.
    let _client = client(&relay);
    assert!(matches!(
        send(&relay, sync("/")).recv_timeout(SOON),
        Ok(InjectedReply::Answered { err: 0, .. })
    ));
}

#[test]
fn the_chroot_goes_in_front_of_paths() {
    let (server, seen_rx) = fake_server();
    let relay = relay(&server, "/app");
    let _client = client(&relay);
    let replies = [
        send(&relay, exists("/x/y")),
        send(&relay, sync("/")),
        send(&relay, exists("/")),
    ];
    let paths: Vec<String> = (0..3).map(|_| seen(&seen_rx).path).collect();
    assert_eq!(paths, ["/app/x/y", "/app", "/app"]);
    for reply in replies {
        assert!(matches!(
            reply.recv_timeout(SOON),
            Ok(InjectedReply::Answered { err: 0, .. })
        ));
    }
    let plain = relay_paths("");
    assert_eq!(plain, ["/x/y", "/"]);
}

#[test]
fn notifications_go_to_the_watch_sink_without_the_chroot_never_to_the_client() {
    let (server, seen_rx) = fake_server();
    let (watch_tx, watches) = mpsc::channel();
    let sink: WatchSink = Box::new(move |path, kind| {
        let _ = watch_tx.send((path, kind));
    });
    let relay = watching_relay(&server, "/app", sink);
    let mut client = client(&relay);
    let op = Op::Exists {
        path: "/g/notify".into(),
        watch: true,
    };
    let reply = send(&relay, op);
    assert_eq!(seen(&seen_rx).path, "/app/g/notify");
    assert!(matches!(
        reply.recv_timeout(SOON),
        Ok(InjectedReply::Answered { err: -101, .. })
    ));
    assert_eq!(
        watches.recv_timeout(SOON),
        Ok(("/g/notify".to_owned(), WatchKind::Deleted))
    );
    assert_quiet(&mut client, false);
}

fn relay_paths(chroot: &str) -> Vec<String> {
    let (server, seen_rx) = fake_server();
    let relay = relay(&server, chroot);
    let _client = client(&relay);
    let _a = send(&relay, exists("/x/y"));
    let _b = send(&relay, sync("/"));
    (0..2).map(|_| seen(&seen_rx).path).collect()
}

/// What a fake server read in a connect request: session id and password.
type Presented = (i64, Vec<u8>);

/// A fake server that grants [`SESSION`] (password 9s) to a request for a
/// new session, resumes it when presented with its password, and refuses
/// everything once `expired` is set. Reports every connect request.
fn session_server(expired: Arc<AtomicBool>) -> (String, Receiver<Presented>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, presented) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, expired) = (tx.clone(), expired.clone());
            thread::spawn(move || {
                let Some(request) = read_frame(&mut stream, MAX_FRAME) else {
                    return;
                };
                let body = request.get(4..).unwrap_or_default();
                let session = be_i64(body, 16).expect("session id");
                let len = be_i32(body, 24).expect("password length") as usize;
                let password = body.get(28..28 + len).expect("password").to_vec();
                let _ = tx.send((session, password.clone()));
                let grant = !expired.load(Ordering::SeqCst)
                    && (session == 0 || (session == SESSION && password == [9; 16]));
                let mut response = 0i32.to_be_bytes().to_vec();
                response.extend_from_slice(&(if grant { 4000i32 } else { 0 }).to_be_bytes());
                response.extend_from_slice(&(if grant { SESSION } else { 0 }).to_be_bytes());
                ustring(&mut response, &[if grant { 9 } else { 0 }; 16]);
                response.push(0);
                let _ = stream.write_all(&framed(&response));
                while read_frame(&mut stream, MAX_FRAME).is_some() {}
            });
        }
    });
    (addr, presented)
}

/// Sends a connect request for a new session, as a fresh crate client does.
fn ask_new_session(relay: &Relay) -> TcpStream {
    let mut stream = TcpStream::connect(relay.addr()).expect("connect");
    stream.set_read_timeout(Some(SOON)).expect("timeout");
    let mut request = Vec::new();
    for int in [0i32, 0, 0, 4000] {
        request.extend_from_slice(&int.to_be_bytes());
    }
    request.extend_from_slice(&0i64.to_be_bytes());
    ustring(&mut request, &[0; 16]);
    stream.write_all(&framed(&request)).expect("write");
    stream
}

fn granted_timeout(stream: &mut TcpStream) -> Option<i32> {
    let response = read_frame(stream, MAX_FRAME)?;
    be_i32(&response, 8)
}

#[test]
fn later_connections_resume_the_first_session() {
    let (server, presented) = session_server(Arc::new(AtomicBool::new(false)));
    let relay = relay(&server, "");
    let mut first = ask_new_session(&relay);
    assert_eq!(granted_timeout(&mut first), Some(4000));
    assert_eq!(presented.recv_timeout(SOON), Ok((0, vec![0; 16])));
    relay.cut();
    // A fresh client asks for a new session; the relay presents ours.
    let mut second = ask_new_session(&relay);
    assert_eq!(granted_timeout(&mut second), Some(4000));
    assert_eq!(presented.recv_timeout(SOON), Ok((SESSION, vec![9; 16])));
}

#[test]
fn after_an_expiry_the_relay_connects_nowhere() {
    let expired = Arc::new(AtomicBool::new(false));
    let (server, presented) = session_server(expired.clone());
    let relay = relay(&server, "");
    let mut first = ask_new_session(&relay);
    assert_eq!(granted_timeout(&mut first), Some(4000));
    presented.recv_timeout(SOON).expect("the first request");
    expired.store(true, Ordering::SeqCst);
    relay.cut();
    let mut refused = ask_new_session(&relay);
    assert_eq!(
        granted_timeout(&mut refused),
        Some(0),
        "the refusal is passed on"
    );
    assert_eq!(presented.recv_timeout(SOON), Ok((SESSION, vec![9; 16])));
    // No new session behind our back: the next request is held, not sent.
    let mut held = ask_new_session(&relay);
    assert_quiet(&mut held, false);
    assert!(presented.recv_timeout(Duration::from_millis(600)).is_err());
}

#[test]
fn while_no_server_answers_the_connection_is_held_until_one_does() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let relay = relay(&format!("127.0.0.1:{port}"), "");
    let mut held = ask_new_session(&relay);
    assert_quiet(&mut held, false);
    // A server comes up on that port: the held request goes through.
    let server = TcpListener::bind(("127.0.0.1", port)).expect("rebind");
    let (mut up, _) = server.accept().expect("the relay tries again");
    let request = read_frame(&mut up, MAX_FRAME).expect("the held connect request");
    assert_eq!(be_i64(request.get(4..).unwrap_or_default(), 16), Some(0));
}
