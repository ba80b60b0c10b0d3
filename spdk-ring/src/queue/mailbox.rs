//! The bounded multi-producer queue between rings on different threads: a
//! [`Mailbox`] carries entries forwarded to a ring, completions coming back
//! to the ring that forwarded them, and `MsgRing` messages.
//!
//! The queue itself is `crossbeam-queue`'s `ArrayQueue` (bounded, lock-free,
//! preallocated, `push` hands the value back when full). What this file adds
//! is the close protocol, so that a value is never lost when its consumer
//! goes away while producers still send:
//!
//! - the consumer [`close`](Mailbox::close)s: it sets `closed`, then drains;
//! - a producer pushes, then looks at `closed`; if it is set, the producer
//!   drains too.
//!
//! Both sides put a `SeqCst` fence between their write and their read, so
//! at least one of them sees the other's write (the store-buffering
//! pattern): either the consumer's drain finds the value, or the producer
//! sees `closed` and drains it itself. A drained value goes to the drainer's
//! `settle` function (for forwarded entries: failed `ECANCELED` back to the
//! ring that sent it), and `pop` is exclusive, so each value is settled or
//! received exactly once, whoever drains.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// A bounded multi-producer queue with a close protocol (see the module
/// docs). Its consumer is one ring's thread; producers are any threads.
#[derive(Debug)]
pub struct Mailbox<T> {
    queue: ArrayQueue<T>,
    closed: AtomicBool,
}

/// Why [`Mailbox::send`] did not take a value; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The mailbox holds as many values as it can.
    Full(T),
    /// The consumer closed the mailbox before the value was sent.
    Closed(T),
}

impl<T> Refused<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Refused::Full(v) | Refused::Closed(v) => v,
        }
    }
}

/// What became of a value [`Mailbox::send`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It waits for the consumer.
    Queued,
    /// The consumer closed while it was being sent: the sender drained the
    /// mailbox, so it (and any other value left) went to `settle`, or to the
    /// consumer's own final drain.
    Closed,
}

impl<T> Mailbox<T> {
    /// A mailbox of `capacity` values (at least 1), allocated now and never again.
    pub fn new(capacity: usize) -> Mailbox<T> {
        Mailbox {
            queue: ArrayQueue::new(capacity.max(1)),
            closed: AtomicBool::new(false),
        }
    }

    /// How many values it holds at most.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Values waiting (a snapshot).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no value waits (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the consumer has closed it.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues `value`, or hands it back when the mailbox is full or closed.
    /// If the consumer closes while the value goes in, this drains the
    /// mailbox into `settle` (this value and any other left) and answers
    /// [`Sent::Closed`].
    pub fn send(&self, value: T, settle: impl FnMut(T)) -> Result<Sent, Refused<T>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed(value));
        }
        self.queue.push(value).map_err(Refused::Full)?;
        // Pairs with the fence in `close` (see the module docs).
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            self.drain(settle);
            return Ok(Sent::Closed);
        }
        Ok(Sent::Queued)
    }

    /// Takes the oldest value (consumer side). Values of one producer come
    /// out in the order it sent them.
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Closes the mailbox (consumer side, once, when it goes away): later
    /// sends are refused, and every value queued now or by a send racing
    /// with this goes to `settle`, here or in that send.
    pub fn close(&self, settle: impl FnMut(T)) {
        self.closed.store(true, Ordering::Relaxed);
        // Pairs with the fence in `send`.
        fence(Ordering::SeqCst);
        self.drain(settle);
    }

    fn drain(&self, mut settle: impl FnMut(T)) {
        while let Some(value) = self.queue.pop() {
            settle(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn mailbox_is_fifo_and_hands_back_a_value_when_full() {
        let m = Mailbox::new(2);
        assert_eq!(m.send(1, drop), Ok(Sent::Queued));
        assert_eq!(m.send(2, drop), Ok(Sent::Queued));
        assert_eq!(m.send(3, drop), Err(Refused::Full(3)));
        assert_eq!(m.len(), 2);
        assert_eq!(m.pop(), Some(1));
        assert_eq!(m.send(3, drop), Ok(Sent::Queued));
        assert_eq!((m.pop(), m.pop(), m.pop()), (Some(2), Some(3), None));
        assert!(m.is_empty());
    }

    #[test]
    fn mailbox_close_settles_what_waits_and_refuses_later_sends() {
        let m = Mailbox::new(4);
        m.send(10, drop).unwrap();
        m.send(11, drop).unwrap();
        let mut settled = Vec::new();
        m.close(|v| settled.push(v));
        assert_eq!(settled, [10, 11]);
        assert!(m.is_closed());
        assert_eq!(m.send(12, drop), Err(Refused::Closed(12)));
        assert_eq!(Refused::Closed(12).into_inner(), 12);
        assert_eq!(m.pop(), None);
    }

    #[test]
    fn mailbox_values_drop_with_it() {
        let value = Arc::new(());
        let m = Mailbox::new(2);
        m.send(value.clone(), drop).unwrap();
        drop(m);
        assert_eq!(Arc::strong_count(&value), 1);
    }

    /// Many producers race a consumer that closes midway: every value is
    /// received or settled exactly once, and each producer's received
    /// values come out in its order.
    #[test]
    fn mailbox_many_producers_race_close_and_every_value_lands_once() {
        let (producers, per_producer, capacity, rounds) = if cfg!(miri) {
            (3, 12, 4, 2)
        } else {
            (8, 20_000, 64, 20)
        };
        for round in 0..rounds {
            let m = Arc::new(Mailbox::<(usize, usize)>::new(capacity));
            let seen: Arc<Vec<AtomicUsize>> = Arc::new(
                (0..producers * per_producer)
                    .map(|_| AtomicUsize::new(0))
                    .collect(),
            );
            let refused = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..producers)
                .map(|p| {
                    let (m, seen, refused) = (m.clone(), seen.clone(), refused.clone());
                    std::thread::spawn(move || {
                        for i in 0..per_producer {
                            let mut value = (p, i);
                            loop {
                                let settle = |(p, i): (usize, usize)| {
                                    seen[p * per_producer + i].fetch_add(1, Ordering::Relaxed);
                                };
                                match m.send(value, settle) {
                                    Ok(_) => break,
                                    Err(Refused::Full(v)) => {
                                        value = v;
                                        std::thread::yield_now();
                                    }
                                    Err(Refused::Closed(_)) => {
                                        refused.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            // Consume a while, then close part way through (later rounds
            // close later), settling what is left.
            let close_after = (round + 1) * producers * per_producer / (rounds + 1);
            let mut received = 0;
            let mut last = vec![None; producers];
            while received < close_after {
                if let Some((p, i)) = m.pop() {
                    assert!(last[p].map_or(true, |l| l < i), "producer {p} out of order");
                    last[p] = Some(i);
                    seen[p * per_producer + i].fetch_add(1, Ordering::Relaxed);
                    received += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            m.close(|(p, i)| {
                seen[p * per_producer + i].fetch_add(1, Ordering::Relaxed);
            });
            for t in threads {
                t.join().unwrap();
            }
            let refused = refused.load(Ordering::Relaxed);
            let landed: usize = seen.iter().map(|s| s.load(Ordering::Relaxed)).sum();
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) <= 1), "twice");
            assert_eq!(landed + refused, producers * per_producer, "lost");
        }
    }
}
