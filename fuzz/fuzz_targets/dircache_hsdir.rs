//! HSDir v3 descriptor cache: the outer-layer decoder, the cache and the HTTP adapter never
//! panic, and what the builder signs the decoder accepts and the cache serves back.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use fors::dircache::hsdir::build::{build_outer, OuterSpec};
use fors::dircache::hsdir::outer::{c_string, HS_DESC_MAX_LEN};
use fors::dircache::hsdir::{decode_outer, handle_fetch, handle_publish, HsDirCache};
use fors::keys::Ed25519Keypair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    // A tight bound so pruning runs too.
    let mut cache = HsDirCache::new(4096, HS_DESC_MAX_LEN);
    match mode % 3 {
        // Raw bytes as a posted descriptor.
        0 => {
            let decoded = decode_outer(data, HS_DESC_MAX_LEN, now);
            let stored = cache.publish(data, now);
            assert_eq!(decoded.is_ok(), stored.is_ok());
            if let Ok(outer) = decoded {
                assert_eq!(
                    cache.lookup(&outer.blinded_key).as_deref(),
                    Some(c_string(data))
                );
                // The same revision again is refused.
                assert!(cache.publish(data, now).is_err());
            }
        }
        // A descriptor signed by the builder around fuzzed superencrypted bytes.
        1 => {
            let blinded = Ed25519Keypair::from_expanded(&[7; 64]);
            let signing = Ed25519Keypair::from_expanded(&[9; 64]);
            let text = build_outer(
                &OuterSpec {
                    blinded: &blinded,
                    signing: &signing,
                    cert_lifetime_secs: 3600,
                    // At most 255 minutes: always within the 12-hour limit.
                    lifetime_minutes: u32::from(mode),
                    revision_counter: data.len() as u64,
                    superencrypted: data,
                },
                now,
            );
            let ok = data.len() > 48 && text.len() < HS_DESC_MAX_LEN as usize;
            assert_eq!(cache.publish(text.as_bytes(), now).is_ok(), ok);
        }
        // The HTTP adapter: the URL tail and the key from the input.
        _ => {
            let s = String::from_utf8_lossy(data);
            let (url, body) = s.split_once('\n').unwrap_or((&s, ""));
            let a = handle_publish(&mut cache, url, body.as_bytes(), mode & 4 != 0, now);
            assert!(matches!(a.status, 200 | 400 | 503));
            if let Err((status, _)) = handle_fetch(&cache, url, mode & 8 != 0) {
                assert!(matches!(status, 404 | 503));
            }
        }
    }
});
