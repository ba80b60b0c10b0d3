//! Microbenchmark of the queue between rings alone,
//! [`spdk_ring::queue::Mailbox`] (the forward queue, the return queue and
//! the message queue of every ring): a producer thread sends entries the
//! size of a forwarded entry while a consumer thread takes them, as a core
//! forwarding to another core's ring does, without SPDK and without the
//! rings. Threads are pinned to cores 0 and 1 where the machine has them.
//!
//! * `one_way`: the producer sends `n` entries (spinning while the mailbox is
//!   full), the consumer pops `n`; time per entry.
//! * `array_queue_one_way`: `one_way` on crossbeam's `ArrayQueue` alone,
//!   without the mailbox's close protocol: what the protocol adds.
//! * `round_trip`: the producer sends and the consumer answers each entry in
//!   a second mailbox, which the producer drains: the shape of a forwarded
//!   entry and its return, with `depth` entries out at once.
//!
//! `cargo bench -p spdk-ring --bench forward_queue` (`-- --quick` for a
//! smoke run; builds without SPDK).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spdk_ring::queue::{Mailbox, Refused};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// About the size of a forwarded entry (target, op, user_data, reply-to).
type Payload = [u64; 9];

fn pin(core: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read it. A core the
    // machine lacks fails the call, which only leaves the thread unpinned.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn send_spinning(m: &Mailbox<Payload>, mut value: Payload) {
    loop {
        match m.send(value, drop) {
            Ok(_) => return,
            Err(Refused::Full(v)) => {
                value = v;
                std::hint::spin_loop();
            }
            Err(Refused::Closed(_)) => unreachable!("never closed here"),
        }
    }
}

fn one_way(n: u64, capacity: usize) -> Duration {
    let m = Arc::new(Mailbox::<Payload>::new(capacity));
    let producer = {
        let m = m.clone();
        std::thread::spawn(move || {
            pin(0);
            for i in 0..n {
                send_spinning(&m, [i; 9]);
            }
        })
    };
    pin(1);
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        match m.pop() {
            Some(v) => {
                assert_eq!(v[0], got, "in order");
                got += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    producer.join().unwrap();
    elapsed
}

fn array_queue_one_way(n: u64, capacity: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Payload>::new(capacity));
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            pin(0);
            for i in 0..n {
                let mut value = [i; 9];
                while let Err(v) = q.push(value) {
                    value = v;
                    std::hint::spin_loop();
                }
            }
        })
    };
    pin(1);
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        match q.pop() {
            Some(_) => got += 1,
            None => std::hint::spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    producer.join().unwrap();
    elapsed
}

fn round_trip(n: u64, depth: u64) -> Duration {
    let there = Arc::new(Mailbox::<Payload>::new(depth as usize));
    let back = Arc::new(Mailbox::<Payload>::new(depth as usize));
    let consumer = {
        let (there, back) = (there.clone(), back.clone());
        std::thread::spawn(move || {
            pin(1);
            let mut answered = 0;
            while answered < n {
                match there.pop() {
                    Some(v) => {
                        send_spinning(&back, v);
                        answered += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        })
    };
    pin(0);
    let start = Instant::now();
    let (mut sent, mut returned) = (0, 0);
    while returned < n {
        while sent < n && sent - returned < depth {
            send_spinning(&there, [sent; 9]);
            sent += 1;
        }
        while let Some(_v) = back.pop() {
            returned += 1;
        }
    }
    let elapsed = start.elapsed();
    consumer.join().unwrap();
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_queue");
    group.throughput(Throughput::Elements(1));
    for capacity in [16usize, 128] {
        group.bench_function(BenchmarkId::new("one_way", capacity), |b| {
            b.iter_custom(|iters| one_way(iters, capacity))
        });
    }
    group.bench_function(BenchmarkId::new("array_queue_one_way", 128), |b| {
        b.iter_custom(|iters| array_queue_one_way(iters, 128))
    });
    for depth in [1u64, 16, 128] {
        group.bench_function(BenchmarkId::new("round_trip", depth), |b| {
            b.iter_custom(|iters| round_trip(iters, depth))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
