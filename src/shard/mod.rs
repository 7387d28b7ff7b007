//! The shard loop: io_uring, buffer rings, cross-shard queues.
