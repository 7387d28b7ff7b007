//! The relay daemon: process lifecycle, control-plane thread, and the shards' relay handler.
