//! Cell codec: fixed and variable-length link cells, relay cells (formats v0 and v1) and the
//! bodies of every cell and relay message a middle or exit relay sees (tor-spec §"Cell packet
//! format", §"Relay cells").
