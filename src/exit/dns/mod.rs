//! DNS resolution for exit streams (sans-IO client, cache).
