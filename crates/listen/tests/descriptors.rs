//! A listener that runs out of file descriptors degrades itself alone: it
//! keeps accepting (and closing) what waits in its backlog, counts it, and
//! serves again once descriptors come back.
//!
//! One test in its own binary: it lowers this process's open-file limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_engine::{Engine, Transport};
use busbar_listen::{Accept, Limits};
use busbar_store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn set_open_file_limit(n: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only touch the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = n.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn out_of_descriptors_degrades_the_listener_and_it_recovers() {
    let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let accept = Accept::new(
        &engine,
        Transport::Tcp,
        Limits::total(1000),
        Duration::from_secs(1),
        stopping,
    );
    let served = tokio::spawn(accept.run(
        move || {
            let listener = listener.clone();
            async move { listener.accept().await }
        },
        |mut s: TcpStream, _| async move {
            let _ = s.write_all(b"hello\n").await;
        },
        |_s: TcpStream, _| async {},
    ));
    // Let the loop start (and take its reserve descriptor) first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Take every descriptor this process may still open, but one for the
    // client's own socket: the listener's side has none left.
    set_open_file_limit(256);
    let mut hoard = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hoard.push(f);
    }
    hoard.pop();
    let started = Instant::now();
    let mut client = TcpStream::connect(addr).await.unwrap();
    // The waiting connection is accepted with the reserve and closed at
    // once: the client sees the end, not a hang.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("closed promptly")
        .ok();
    assert!(answer.is_empty(), "not served: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
    let errors = engine
        .metrics()
        .accept_errors
        .get(["tcp", "out_of_descriptors"])
        .get();
    assert!(errors >= 1, "counted: {errors}");
    // Descriptors come back: the listener serves again.
    drop(hoard);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("served")
        .unwrap();
    assert_eq!(answer, b"hello\n");
    let _ = stop.send(true);
    let _ = served.await;
}
