//! Tests only: the shapes of the transcribed CGO vectors in `testdata/vectors.rs` (hex text).
#![forbid(unsafe_code)]

pub(super) struct EtVector {
    pub encrypt: bool,
    /// KB | KU.
    pub keys: &'static str,
    /// H | command | X_R.
    pub tweak: &'static str,
    pub block: &'static str,
    pub expect: &'static str,
}

pub(super) struct PrfVector {
    /// K | B.
    pub keys: &'static str,
    pub t: u8,
    pub input: &'static str,
    pub expect: &'static str,
}

pub(super) struct UivVector {
    pub encrypt: bool,
    /// J | S.
    pub keys: &'static str,
    /// H (16 bytes) | command.
    pub tweak: &'static str,
    pub x_l: &'static str,
    pub x_r: &'static str,
    pub y_l: &'static str,
    pub y_r: &'static str,
}

pub(super) struct UivUpdateVector {
    pub keys: &'static str,
    pub nonce: &'static str,
    pub new_keys: &'static str,
    pub new_nonce: &'static str,
}

/// One direction's state: UIV+ keys (J | S), N, T'.
pub(super) struct State {
    pub keys: &'static str,
    pub nonce: &'static str,
    pub tprime: &'static str,
}

pub(super) struct RelayVector {
    /// Toward the client (relayed backward) if true, else away from it (forward).
    pub inbound: bool,
    pub state: State,
    pub cmd: &'static str,
    pub tag: &'static str,
    pub msg: &'static str,
    pub new_state: State,
    pub tag_out: &'static str,
    pub msg_out: &'static str,
}

pub(super) struct OriginateVector {
    pub state: State,
    pub cmd: &'static str,
    pub msg: &'static str,
    pub new_state: State,
    pub tag_out: &'static str,
    pub msg_out: &'static str,
}

pub(super) struct ClientVector {
    pub states: [State; 3],
    /// 1-based.
    pub target_hop: usize,
    pub cmd: &'static str,
    pub msg: &'static str,
    pub new_states: [State; 3],
    pub tag_out: &'static str,
    pub msg_out: &'static str,
}
