//! Circuit handshakes: ntor, ntor-v3, CREATE_FAST, and the KDFs they use.
