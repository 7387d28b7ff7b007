//! Compression methods for directory answers, named as C tor names them in
//! `Accept-Encoding` / `Content-Encoding` (dir-spec §6.1 "HTTP headers"; C tor
//! `compress.c` `compression_method_names`).
//!
//! `deflate` is the zlib format (RFC 1950), as C tor's `ZLIB_METHOD` and the `.z` URL
//! suffix; `x-tor-lzma` is LZMA in the "alone" (.lzma) container, as C tor's
//! `lzma_alone_encoder`.

use std::io::Write;

/// One compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Identity,
    Deflate,
    Gzip,
    Zstd,
    Lzma,
}

/// Preference for documents compressed once and kept (C tor `srv_meth_pref_precompressed`).
pub const PREF_PRECOMPRESSED: [Method; 5] = [
    Method::Lzma,
    Method::Zstd,
    Method::Deflate,
    Method::Gzip,
    Method::Identity,
];
/// The compressed forms kept of each consensus, besides its text (C tor consdiffmgr.c
/// `compress_consensus_with`).
pub const CONSENSUS_FORMS: [Method; 3] = [Method::Deflate, Method::Lzma, Method::Zstd];
/// The compressed forms kept of each consensus diff, besides its text (C tor consdiffmgr.c
/// `compress_diffs_with`: gzip here, not zlib).
pub const DIFF_FORMS: [Method; 3] = [Method::Gzip, Method::Lzma, Method::Zstd];

/// Preference for answers compressed per request (C tor
/// `srv_meth_pref_streaming_compression`: LZMA is too slow for that).
pub const PREF_STREAMING: [Method; 4] = [
    Method::Zstd,
    Method::Deflate,
    Method::Gzip,
    Method::Identity,
];

impl Method {
    /// The `Content-Encoding` value C tor sends.
    /// Every method, in a fixed order (metric slots).
    pub const ALL: [Method; 5] = [
        Method::Identity,
        Method::Deflate,
        Method::Gzip,
        Method::Zstd,
        Method::Lzma,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Identity => "identity",
            Method::Deflate => "deflate",
            Method::Gzip => "gzip",
            Method::Zstd => "x-zstd",
            Method::Lzma => "x-tor-lzma",
        }
    }

    /// A name from `Accept-Encoding` (exact, case-sensitive, as C tor's `strcmp`).
    pub fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "identity" => Method::Identity,
            "deflate" => Method::Deflate,
            "gzip" | "x-gzip" => Method::Gzip,
            "x-zstd" => Method::Zstd,
            "x-tor-lzma" => Method::Lzma,
            _ => return None,
        })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of methods a client accepts. Identity is always in it (C tor
/// `parse_accept_encoding_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Methods(u8);

impl Methods {
    pub const IDENTITY_ONLY: Methods = Methods(1);

    /// The methods named in an `Accept-Encoding` value: comma-separated, spaces
    /// stripped, unknown names ignored (no `q=` weights, as C tor).
    pub fn from_accept_encoding(value: &str) -> Methods {
        let mut m = Methods::IDENTITY_ONLY;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(method) = Method::from_name(name) {
                m.insert(method);
            }
        }
        m
    }

    pub fn insert(&mut self, method: Method) {
        self.0 |= method.bit();
    }

    pub fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// The first method of `pref` the client accepts (C tor
    /// `find_best_compression_method`).
    pub fn best(self, pref: &[Method]) -> Method {
        pref.iter()
            .copied()
            .find(|m| self.contains(*m))
            .unwrap_or(Method::Identity)
    }
}

/// A compressor failed (it should not on in-memory data; reported, never a panic).
#[derive(Debug, thiserror::Error)]
#[error("{method:?} compression failed: {detail}")]
pub struct CompressError {
    pub method: Method,
    pub detail: String,
}

/// C tor's levels (`memory_level` in compress_zstd.c and compress_lzma.c): BEST_COMPRESSION
/// (= HIGH) for kept documents (`tor_compress` in consdiffmgr.c), LOW_COMPRESSION for
/// per-request answers.
const ZSTD_LEVEL_HIGH: i32 = 9;
const ZSTD_LEVEL_LOW: i32 = 1;
const LZMA_PRESET_HIGH: u32 = 6;
const LZMA_PRESET_LOW: u32 = 2;

/// Compresses `data` with `method`. `kept` is true for a document compressed once and
/// served many times (the best ratio), false for a per-request answer (fast).
pub fn compress(method: Method, data: &[&[u8]], kept: bool) -> Result<Vec<u8>, CompressError> {
    let err = |e: std::io::Error| CompressError {
        method,
        detail: e.to_string(),
    };
    let level = if kept {
        flate2::Compression::best()
    } else {
        flate2::Compression::fast()
    };
    let total: usize = data.iter().map(|d| d.len()).sum();
    let out = Vec::with_capacity(total / 2 + 64);
    match method {
        Method::Identity => {
            let mut out = Vec::with_capacity(total);
            for d in data {
                out.extend_from_slice(d);
            }
            Ok(out)
        }
        Method::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(out, level);
            for d in data {
                e.write_all(d).map_err(err)?;
            }
            e.finish().map_err(err)
        }
        Method::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, level);
            for d in data {
                e.write_all(d).map_err(err)?;
            }
            e.finish().map_err(err)
        }
        Method::Zstd => {
            let lvl = if kept {
                ZSTD_LEVEL_HIGH
            } else {
                ZSTD_LEVEL_LOW
            };
            let mut e = zstd::stream::write::Encoder::new(out, lvl).map_err(err)?;
            for d in data {
                e.write_all(d).map_err(err)?;
            }
            e.finish().map_err(err)
        }
        Method::Lzma => {
            let opts = liblzma::stream::LzmaOptions::new_preset(if kept {
                LZMA_PRESET_HIGH
            } else {
                LZMA_PRESET_LOW
            })
            .map_err(|e| CompressError {
                method,
                detail: e.to_string(),
            })?;
            let stream =
                liblzma::stream::Stream::new_lzma_encoder(&opts).map_err(|e| CompressError {
                    method,
                    detail: e.to_string(),
                })?;
            let mut e = liblzma::write::XzEncoder::new_stream(out, stream);
            for d in data {
                e.write_all(d).map_err(err)?;
            }
            e.finish().map_err(err)
        }
    }
}

/// Decompresses a fetched answer in `method`, refusing more than `max_out` bytes of output
/// (a compression bomb: C tor `tor_compress_is_compression_bomb` refuses those too).
pub fn decompress(method: Method, data: &[u8], max_out: usize) -> Result<Vec<u8>, CompressError> {
    use std::io::Read;
    let err = |e: std::io::Error| CompressError {
        method,
        detail: e.to_string(),
    };
    let mut out = Vec::new();
    let limit = max_out as u64 + 1;
    match method {
        Method::Identity => out.extend_from_slice(data),
        Method::Deflate => {
            flate2::read::ZlibDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Method::Gzip => {
            flate2::read::GzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Method::Zstd => {
            zstd::stream::read::Decoder::new(data)
                .map_err(err)?
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Method::Lzma => {
            let s =
                liblzma::stream::Stream::new_lzma_decoder(u64::MAX).map_err(|e| CompressError {
                    method,
                    detail: e.to_string(),
                })?;
            liblzma::read::XzDecoder::new_stream(data, s)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
    }
    if out.len() > max_out {
        return Err(CompressError {
            method,
            detail: format!("more than {max_out} bytes once decompressed"),
        });
    }
    Ok(out)
}

/// A compressor fed as the answer is sent (C tor's `compress_state` on a directory
/// connection): the documents go in one by one as the socket drains, so a connection holds
/// at most one document's compressed output and the compressor's window, never a whole
/// compressed answer. Levels as [`compress`] with `kept` false.
pub struct StreamCompressor {
    method: Method,
    enc: Encoder,
}

enum Encoder {
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Lzma(liblzma::write::XzEncoder<Vec<u8>>),
}

impl StreamCompressor {
    /// `None` for [`Method::Identity`] (nothing to do).
    pub fn new(method: Method) -> Result<Option<StreamCompressor>, CompressError> {
        let fail = |detail: String| CompressError { method, detail };
        let enc = match method {
            Method::Identity => return Ok(None),
            Method::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            )),
            Method::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            )),
            Method::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL_LOW)
                    .map_err(|e| fail(e.to_string()))?,
            ),
            Method::Lzma => {
                let opts = liblzma::stream::LzmaOptions::new_preset(LZMA_PRESET_LOW)
                    .map_err(|e| fail(e.to_string()))?;
                let stream = liblzma::stream::Stream::new_lzma_encoder(&opts)
                    .map_err(|e| fail(e.to_string()))?;
                Encoder::Lzma(liblzma::write::XzEncoder::new_stream(Vec::new(), stream))
            }
        };
        Ok(Some(StreamCompressor { method, enc }))
    }

    /// Feeds `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), CompressError> {
        let r = match &mut self.enc {
            Encoder::Deflate(e) => e.write_all(data),
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
            Encoder::Lzma(e) => e.write_all(data),
        };
        r.map_err(|e| CompressError {
            method: self.method,
            detail: e.to_string(),
        })
    }

    /// The compressed bytes produced so far and not yet taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(match &mut self.enc {
            Encoder::Deflate(e) => e.get_mut(),
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
            Encoder::Lzma(e) => e.get_mut(),
        })
    }

    /// Ends the stream: the rest of the output.
    pub fn finish(self) -> Result<Vec<u8>, CompressError> {
        let r = match self.enc {
            Encoder::Deflate(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Lzma(e) => e.finish(),
        };
        r.map_err(|e| CompressError {
            method: self.method,
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..2000u32 {
            v.extend_from_slice(
                format!("r relay{i} AAAA BBBB 2026-12-06 10.0.0.1 9001 0\n").as_bytes(),
            );
        }
        v
    }

    fn decompress(method: Method, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match method {
            Method::Identity => out.extend_from_slice(data),
            Method::Deflate => {
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Method::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Method::Zstd => out = zstd::decode_all(data).unwrap(),
            Method::Lzma => {
                let s = liblzma::stream::Stream::new_lzma_decoder(u64::MAX).unwrap();
                liblzma::read::XzDecoder::new_stream(data, s)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn every_method_round_trips_and_compresses() {
        let data = sample();
        let (a, b) = data.split_at(data.len() / 3);
        for m in PREF_PRECOMPRESSED {
            for kept in [true, false] {
                let c = compress(m, &[a, b], kept).unwrap();
                assert_eq!(decompress(m, &c), data, "{m:?}");
                if m != Method::Identity {
                    assert!(c.len() < data.len() / 4, "{m:?} {}", c.len());
                }
            }
        }
    }

    #[test]
    fn a_stream_compressor_fed_in_pieces_round_trips() {
        let data = sample();
        for m in PREF_PRECOMPRESSED {
            let Some(mut z) = StreamCompressor::new(m).unwrap() else {
                assert_eq!(m, Method::Identity);
                continue;
            };
            let mut out = Vec::new();
            for piece in data.chunks(777) {
                z.write(piece).unwrap();
                out.extend(z.take_output());
            }
            out.extend(z.finish().unwrap());
            assert_eq!(decompress(m, &out), data, "{m:?}");
            assert!(out.len() < data.len() / 4, "{m:?}");
        }
    }

    #[test]
    fn decompress_round_trips_and_refuses_bombs() {
        let data = sample();
        for m in PREF_PRECOMPRESSED {
            let c = compress(m, &[&data], true).unwrap();
            assert_eq!(super::decompress(m, &c, data.len()).unwrap(), data, "{m:?}");
            assert!(super::decompress(m, &c, data.len() - 1).is_err(), "{m:?}");
        }
        assert!(super::decompress(Method::Zstd, b"not zstd", 1000).is_err());
    }

    #[test]
    fn deflate_is_zlib_framed_and_lzma_is_alone_format() {
        let c = compress(Method::Deflate, &[b"hello"], false).unwrap();
        assert_eq!(c[0], 0x78, "zlib header (RFC 1950)");
        let c = compress(Method::Lzma, &[b"hello"], true).unwrap();
        // .lzma "alone" header: properties byte 0x5d for preset 6 (lc=3 lp=0 pb=2).
        assert_eq!(c[0], 0x5d);
        let c = compress(Method::Zstd, &[b"hello"], true).unwrap();
        assert_eq!(&c[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn accept_encoding_parses_as_c_tor() {
        let m = Methods::from_accept_encoding(" deflate , x-zstd,bogus,, x-tor-lzma");
        assert!(m.contains(Method::Identity));
        assert!(m.contains(Method::Deflate));
        assert!(m.contains(Method::Zstd));
        assert!(m.contains(Method::Lzma));
        assert!(!m.contains(Method::Gzip));
        assert_eq!(m.best(&PREF_PRECOMPRESSED), Method::Lzma);
        assert_eq!(m.best(&PREF_STREAMING), Method::Zstd);
        // Case-sensitive names, as C tor's strcmp.
        let m = Methods::from_accept_encoding("DEFLATE, x-gzip");
        assert!(!m.contains(Method::Deflate));
        assert_eq!(m.best(&PREF_STREAMING), Method::Gzip);
        assert_eq!(
            Methods::IDENTITY_ONLY.best(&PREF_PRECOMPRESSED),
            Method::Identity
        );
    }
}
