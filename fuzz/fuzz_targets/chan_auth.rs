//! AUTH_CHALLENGE, AUTHENTICATE and the AUTH0003 authenticator.
#![no_main]
use fors::cell::chan::{Auth0003, AuthChallenge, AuthMethod, Authenticate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = AuthChallenge::parse(data) {
        let methods: Vec<AuthMethod> = c.methods().collect();
        let mut out = vec![0u8; data.len()];
        let n = AuthChallenge::encode(c.challenge, &methods, &mut out).unwrap();
        assert_eq!(&out[..n], &data[..n]);
    }
    if let Ok(a) = Authenticate::parse(data) {
        let mut out = vec![0u8; data.len()];
        let n = a.encode(&mut out).unwrap();
        assert_eq!(Authenticate::parse(&out[..n]).unwrap(), a);
        let _ = Auth0003::parse(a.auth);
    }
    let _ = Auth0003::parse(data);
    let _ = Auth0003::signed_part(data);
});
