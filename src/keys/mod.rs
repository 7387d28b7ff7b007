//! Relay keys and certificates, stored in C tor's DataDirectory/keys layout.
