//! Stress test of the cross-shard SPSC queue: two threads, bounded counts, checksums.

use std::time::{Duration, Instant};

use fors::shard::spsc;

#[test]
fn two_threads_fifo_with_checksum() {
    const N: u64 = 2_000_000;
    let (mut p, mut c) = spsc::channel::<u64>(64);
    let deadline = Instant::now() + Duration::from_secs(60);
    let producer = std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut i = 0u64;
        while i < N {
            assert!(Instant::now() < deadline, "producer timed out");
            // Uneven batches: publish every 1..=17 items, retrying while full.
            let batch = 1 + (i % 17);
            let mut pushed = 0;
            while pushed < batch && i < N {
                let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                match p.push(v) {
                    Ok(()) => {
                        sum = sum.wrapping_add(v);
                        i += 1;
                        pushed += 1;
                    }
                    Err(_) => break,
                }
            }
            p.publish();
            if pushed == 0 {
                std::thread::yield_now();
            }
        }
        sum
    });
    let mut sum = 0u64;
    let mut expect = 0u64;
    let mut buf = Vec::with_capacity(32);
    while expect < N {
        assert!(Instant::now() < deadline, "consumer timed out at {expect}");
        buf.clear();
        if c.pop_batch(&mut buf, 32) == 0 {
            std::thread::yield_now();
            continue;
        }
        for &v in &buf {
            // FIFO order: each value is exactly the next one pushed.
            assert_eq!(v, expect.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            sum = sum.wrapping_add(v);
            expect += 1;
        }
    }
    assert_eq!(producer.join().unwrap(), sum);
    assert!(c.pop().is_none());
}

#[test]
fn owned_items_cross_threads_without_leaks() {
    use std::sync::Arc;
    let token = Arc::new(());
    let (mut p, mut c) = spsc::channel::<(u32, Arc<()>)>(8);
    let t2 = token.clone();
    let producer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0u32;
        while i < 10_000 {
            assert!(Instant::now() < deadline);
            if p.push((i, t2.clone())).is_ok() {
                i += 1;
            }
            p.publish();
        }
        // Leave some unconsumed items in the queue on drop.
    });
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Leave 4 items (fewer than the capacity of 8) for the drop check.
    while next < 9_996 {
        assert!(Instant::now() < deadline);
        if let Some((v, _)) = c.pop() {
            assert_eq!(v, next);
            next += 1;
        }
    }
    producer.join().unwrap();
    drop(c);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "queued items were not dropped"
    );
}
