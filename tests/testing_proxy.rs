//! The fault proxy of `zk_master::testing` against a plain echo server.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use zk_master::testing::proxy::{Mode, Proxy};

/// An echo server on loopback that stops when dropped.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut conns: Vec<thread::JoinHandle<()>> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let flag = flag.clone();
                        conns.push(thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                            let mut buf = [0u8; 4096];
                            while !flag.load(Ordering::SeqCst) {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Echo {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `msg` and reads its echo, or `None` if nothing (or not all) came back in `wait`.
/// Err if the connection was closed.
fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Result<Option<Duration>, ()> {
    let started = Instant::now();
    s.write_all(msg).map_err(|_| ())?;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < msg.len() {
        match s.read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(_) => return Err(()),
        }
    }
    assert_eq!(got, msg);
    Ok(Some(started.elapsed()))
}

#[test]
fn proxy_passes_delays_blackholes_cuts_and_refuses() {
    let echo = Echo::start();
    let proxy = Proxy::to_port(echo.port);
    let mut s = connect(&proxy);
    let fast = round_trip(&mut s, b"hello", Duration::from_secs(5))
        .unwrap()
        .expect("pass");
    assert!(fast < Duration::from_millis(200), "{fast:?}");

    proxy.set(Mode::Delay(Duration::from_millis(100)));
    let slow = round_trip(&mut s, b"slow", Duration::from_secs(5))
        .unwrap()
        .expect("delay");
    // 100 ms each way.
    assert!(slow >= Duration::from_millis(200), "{slow:?}");
    assert!(slow < Duration::from_millis(1000), "{slow:?}");

    proxy.set(Mode::Blackhole);
    assert_eq!(
        round_trip(&mut s, b"lost?", Duration::from_millis(300)),
        Ok(None),
        "nothing comes back, and no error"
    );
    // A new connection is accepted, and sees nothing either.
    let mut during = connect(&proxy);
    assert_eq!(
        round_trip(&mut during, b"new", Duration::from_millis(200)),
        Ok(None)
    );
    // Healed: the bytes held back arrive, in order.
    proxy.set(Mode::Pass);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut held = [0u8; 5];
    s.read_exact(&mut held).unwrap();
    assert_eq!(&held, b"lost?");
    let mut new = [0u8; 3];
    during
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    during.read_exact(&mut new).unwrap();
    assert_eq!(&new, b"new");

    // Cut, then pass: old connections end, new ones work.
    proxy.cut(Mode::Pass);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "cut");
    let mut again = connect(&proxy);
    assert!(round_trip(&mut again, b"again", Duration::from_secs(5))
        .unwrap()
        .is_some());

    // Cut, then refuse: new connections are closed at once.
    proxy.cut(Mode::Refuse);
    let mut refused = connect(&proxy);
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "refused");
    proxy.set(Mode::Pass);
    let mut back = connect(&proxy);
    assert!(round_trip(&mut back, b"back", Duration::from_secs(5))
        .unwrap()
        .is_some());
    assert!(proxy.connections() >= 5);

    // Dropping the proxy stops its threads promptly, even with a blackholed connection.
    proxy.set(Mode::Blackhole);
    let _held_open = connect(&proxy);
    let dropped = Instant::now();
    drop(proxy);
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropped.elapsed()
    );
    back.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        matches!(back.read(&mut buf), Ok(0) | Err(_)),
        "closed on drop"
    );
}

#[test]
fn proxy_to_a_dead_target_closes_the_client() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // bound, then freed: nobody listens there
    let proxy = Proxy::to_port(port);
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
}
