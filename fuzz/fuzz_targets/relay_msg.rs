//! Any relay command with any body: parse, and re-encode what parsed.
#![no_main]
use fors::cell::relay::msg::RelayMsg;
use fors::cell::RelayCmd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cmd, body)) = data.split_first() else {
        return;
    };
    if let Ok(m) = RelayMsg::parse(RelayCmd(cmd), body) {
        assert_eq!(m.cmd(), RelayCmd(cmd));
        let mut out = vec![0u8; body.len() + 600];
        let n = m.encode(&mut out).unwrap();
        assert_eq!(RelayMsg::parse(RelayCmd(cmd), &out[..n]).unwrap(), m);
    }
});
