//! Each fault kind injected through the registry, its effect observed on real sockets.

use std::io::ErrorKind;
use std::time::Duration;

use lab_faultproxy::{Direction, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::helpers::{
    Harness, WAIT, echo_server, pattern, round_trip, say_and_close_server, talker_server,
};

#[tokio::test]
async fn bytes_pass_unchanged_both_ways_and_are_counted_when_no_fault_is_active() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let sent = pattern(1 << 20);

    let mut stream = h.connect().await;
    let (mut read, mut write) = stream.split();
    let writer = async {
        write.write_all(&sent).await.expect("write");
        write.shutdown().await.expect("shutdown");
    };
    let mut received = Vec::new();
    let reader = async { read.read_to_end(&mut received).await.expect("read") };
    tokio::time::timeout(WAIT, async { tokio::join!(writer, reader) })
        .await
        .expect("echo within the bound");

    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the echo differs from what was sent");
    let stats = h.proxy.stats();
    assert_eq!(stats.connections_total, 1);
    assert_eq!(stats.bytes_upstream, sent.len() as u64);
    assert_eq!(stats.bytes_downstream, sent.len() as u64);
}

#[tokio::test]
async fn a_latency_fault_delays_a_live_connections_reply_by_at_least_its_latency() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let mut stream = h.connect().await;
    assert_eq!(round_trip(&mut stream, b"before").await, b"before");

    h.apply(Fault::Latency {
        ms: 300,
        jitter_ms: 0,
        direction: Direction::Downstream,
    });
    let started = Instant::now();
    let reply = round_trip(&mut stream, b"during").await;
    let elapsed = started.elapsed();

    assert_eq!(reply, b"during");
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");
}

// The clock is paused, so the instants below are the proxy's own timers (virtual time), not
// wall-clock measurements: deterministic however busy the machine is.
#[tokio::test(start_paused = true)]
async fn under_latency_a_message_sent_while_another_waits_is_not_queued_behind_its_delivery() {
    let h = Harness::new("test→echo", echo_server().await).await;
    h.apply(Fault::Latency {
        ms: 300,
        jitter_ms: 0,
        direction: Direction::Downstream,
    });
    let mut stream = h.connect().await;
    let started = Instant::now();

    stream.write_all(b"a").await.expect("write a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"b").await.expect("write b");
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.expect("read a");
    let a_at = started.elapsed();
    assert_eq!(&byte, b"a");
    stream.read_exact(&mut byte).await.expect("read b");
    let b_at = started.elapsed();
    assert_eq!(&byte, b"b");

    assert!(a_at >= Duration::from_millis(300), "a after {a_at:?}");
    assert!(b_at >= Duration::from_millis(400), "b after {b_at:?}");
    // Held behind a's delivery, b would have been read at 300 ms and been due at 600 ms.
    assert!(b_at < Duration::from_millis(600), "b after {b_at:?}");
}

#[tokio::test]
async fn bytes_keep_their_order_and_count_under_latency_with_jitter_and_a_bandwidth_cap() {
    let h = Harness::new("test→echo", echo_server().await).await;
    h.apply(Fault::Latency {
        ms: 20,
        jitter_ms: 20,
        direction: Direction::Both,
    });
    h.apply(Fault::Bandwidth {
        bytes_per_s: 512 * 1024,
        direction: Direction::Both,
    });
    let sent = pattern(192 * 1024);

    let mut stream = h.connect().await;
    let (mut read, mut write) = stream.split();
    let writer = async {
        // Many small writes, so the proxy sees many chunks with different delays.
        for piece in sent.chunks(1_000) {
            write.write_all(piece).await.expect("write");
        }
        write.shutdown().await.expect("shutdown");
    };
    let mut received = Vec::new();
    let reader = async { read.read_to_end(&mut received).await.expect("read") };
    tokio::time::timeout(WAIT, async { tokio::join!(writer, reader) })
        .await
        .expect("echo within the bound");

    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "bytes were reordered or changed");
}

#[tokio::test]
async fn a_bandwidth_fault_paces_bytes_to_its_rate() {
    let h = Harness::new("test→echo", echo_server().await).await;
    h.apply(Fault::Bandwidth {
        bytes_per_s: 64 * 1024,
        direction: Direction::Downstream,
    });
    let mut stream = h.connect().await;

    let started = Instant::now();
    let reply = round_trip(&mut stream, &pattern(32 * 1024)).await;
    let elapsed = started.elapsed();

    assert_eq!(reply, pattern(32 * 1024));
    // 32 KiB at 64 KiB/s is 0.5 s; the first slice (1/50 s) leaves at once.
    assert!(elapsed >= Duration::from_millis(480), "took {elapsed:?}");
}

#[tokio::test]
async fn a_certain_reset_fault_aborts_new_connections_with_an_rst() {
    let h = Harness::new("test→echo", echo_server().await).await;
    h.apply(Fault::Reset { probability: 1.0 });

    let mut stream = h.connect().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer within the bound");

    let error = read.expect_err("a reset, not data or EOF");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    assert_eq!(h.proxy.stats().resets, 1);
}

#[tokio::test]
async fn a_certain_reset_fault_aborts_live_connections_too() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let mut stream = h.connect().await;
    assert_eq!(round_trip(&mut stream, b"alive").await, b"alive");

    h.apply(Fault::Reset { probability: 1.0 });
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer within the bound");

    let error = read.expect_err("a reset, not data or EOF");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn a_reset_fault_with_probability_one_half_resets_some_new_connections_and_spares_others() {
    let h = Harness::new("test→echo", echo_server().await).await;
    h.apply(Fault::Reset { probability: 0.5 });

    let (mut reset, mut served) = (0, 0);
    // All 40 alike has a chance of 2 in 2^40.
    for _ in 0..40 {
        let mut stream = h.connect().await;
        let _ = stream.write_all(b"?").await;
        let mut reply = [0u8; 1];
        match tokio::time::timeout(WAIT, stream.read_exact(&mut reply)).await {
            Ok(Ok(_)) => served += 1,
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => reset += 1,
            other => panic!("neither served nor reset: {other:?}"),
        }
    }

    assert!(reset > 0 && served > 0, "{reset} reset, {served} served");
    assert_eq!(h.proxy.stats().resets, reset);
}

#[tokio::test]
async fn a_reset_fault_with_probability_zero_leaves_connections_alone() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let mut live = h.connect().await;
    h.apply(Fault::Reset { probability: 0.0 });

    let mut new = h.connect().await;

    assert_eq!(round_trip(&mut live, b"live").await, b"live");
    assert_eq!(round_trip(&mut new, b"new").await, b"new");
    assert_eq!(h.proxy.stats().resets, 0);
}

#[tokio::test]
async fn a_blackhole_holds_a_live_connections_bytes_until_it_is_lifted() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let mut stream = h.connect().await;
    assert_eq!(round_trip(&mut stream, b"before").await, b"before");

    let id = h.apply(Fault::Blackhole {
        direction: Direction::Both,
    });
    stream.write_all(b"held").await.expect("write");
    let mut reply = [0u8; 4];
    let during =
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut reply)).await;
    assert!(during.is_err(), "bytes passed a blackhole");
    // A new connection is accepted (and kept) all the same.
    let _new = h.connect().await;

    h.chaos.remove(id).expect("remove");
    tokio::time::timeout(WAIT, stream.read_exact(&mut reply))
        .await
        .expect("the held bytes arrive once lifted")
        .expect("read");
    assert_eq!(&reply, b"held");
}

#[tokio::test]
async fn a_refuse_fault_closes_new_connections_at_once_and_spares_open_ones() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let mut open = h.connect().await;
    assert_eq!(round_trip(&mut open, b"before").await, b"before");

    h.apply(Fault::Refuse);
    let mut new = h.connect().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, new.read(&mut buf))
        .await
        .expect("an answer within the bound");

    assert_eq!(
        read.expect("a clean close"),
        0,
        "the refused connection got data"
    );
    assert_eq!(round_trip(&mut open, b"after").await, b"after");
    assert_eq!(h.proxy.stats().refused, 1);
}

#[tokio::test]
async fn a_slow_close_holds_the_fin_for_its_delay() {
    let h = Harness::new("test→talker", say_and_close_server(b"bye").await).await;
    h.apply(Fault::SlowClose { delay_ms: 400 });
    let mut stream = h.connect().await;

    let mut said = [0u8; 3];
    tokio::time::timeout(WAIT, stream.read_exact(&mut said))
        .await
        .expect("greeting within the bound")
        .expect("read");
    let said_at = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the close within the bound")
        .expect("read to EOF");
    let held = said_at.elapsed();

    assert_eq!(&said, b"bye");
    assert!(rest.is_empty());
    // The server closed right after writing; the proxy read both at once and held the FIN.
    // Half the delay leaves room for the scheduling between the two reads here.
    assert!(held >= Duration::from_millis(200), "FIN after {held:?}");
}

#[tokio::test]
async fn a_cut_after_fault_delivers_exactly_its_bytes_then_closes() {
    let h = Harness::new("test→talker", talker_server(pattern(10_000)).await).await;
    h.apply(Fault::CutAfter {
        bytes: 1_000,
        direction: Direction::Downstream,
    });
    let mut stream = h.connect().await;

    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the cut within the bound")
        .expect("a clean close after the cut");

    assert_eq!(received, pattern(1_000));
    assert_eq!(h.proxy.stats().cuts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_lose_and_reorder_nothing_while_faults_come_and_go() {
    let h = Harness::new("test→echo", echo_server().await).await;
    let sent = pattern(256 * 1024);

    let clients = (0..8).map(|_| {
        let sent = sent.clone();
        let addr = h.proxy.local_addr();
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut read, mut write) = stream.split();
            let writer = async {
                // Paced, so the stream is still flowing while the faults below come and go.
                for piece in sent.chunks(4_096) {
                    write.write_all(piece).await.expect("write");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                write.shutdown().await.expect("shutdown");
            };
            let mut received = Vec::new();
            let reader = async { read.read_to_end(&mut received).await.expect("read") };
            tokio::join!(writer, reader);
            received
        })
    });
    let clients: Vec<_> = clients.collect();
    // Faults on and off under the live connections, each kind that must not lose bytes.
    for round in 0..10u64 {
        let fault = match round % 3 {
            0 => Fault::Latency {
                ms: 10,
                jitter_ms: 10,
                direction: Direction::Both,
            },
            1 => Fault::Bandwidth {
                bytes_per_s: 4 * 1024 * 1024,
                direction: Direction::Downstream,
            },
            _ => Fault::Blackhole {
                direction: Direction::Upstream,
            },
        };
        let id = h.apply(fault);
        tokio::time::sleep(Duration::from_millis(30)).await;
        h.chaos.remove(id).expect("remove");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut echoes = Vec::new();
    for client in clients {
        let echoed = tokio::time::timeout(WAIT, client)
            .await
            .expect("echo within the bound")
            .expect("client task");
        echoes.push(echoed);
    }

    for echoed in echoes {
        assert_eq!(echoed.len(), sent.len());
        assert!(echoed == sent, "bytes were reordered or changed");
    }
}
