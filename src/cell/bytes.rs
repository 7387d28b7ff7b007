//! Allocation-free big-endian reader and writer over borrowed buffers; every cell parser and
//! encoder in this module is built on them so bounds are checked in exactly one place.

use super::CellError;

/// Cursor over a borrowed input; reads return slices of the input, never copies.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CellError> {
        if self.remaining() < n {
            return Err(CellError::Truncated {
                what,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<&'a [u8; N], CellError> {
        let s = self.take(N, what)?;
        // Cannot fail: `take` returned exactly N bytes.
        Ok(s.try_into().expect("slice of length N"))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CellError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, CellError> {
        Ok(u16::from_be_bytes(*self.array::<2>(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, CellError> {
        Ok(u32::from_be_bytes(*self.array::<4>(what)?))
    }
}

/// Cursor over a caller-provided output buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    what: &'static str,
    /// The error behind a failed `write!`, which `fmt::Error` cannot carry.
    fmt_err: Option<CellError>,
}

impl<'a> Writer<'a> {
    /// `what` names the thing being encoded, for `BufferTooSmall` errors.
    pub(crate) fn new(buf: &'a mut [u8], what: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            what,
            fmt_err: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), CellError> {
        let end = self.pos + b.len();
        if end > self.buf.len() {
            return Err(CellError::BufferTooSmall {
                what: self.what,
                need: end,
                have: self.buf.len(),
            });
        }
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), CellError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), CellError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), CellError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Formats text (numbers, IP addresses) straight into the buffer, without a `String`.
    pub(crate) fn fmt(&mut self, args: core::fmt::Arguments<'_>) -> Result<(), CellError> {
        core::fmt::Write::write_fmt(self, args).map_err(|_| {
            self.fmt_err.take().unwrap_or(CellError::BufferTooSmall {
                what: self.what,
                need: self.pos + 1,
                have: self.buf.len(),
            })
        })
    }
}

/// Backs [`Writer::fmt`].
impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.bytes(s.as_bytes()).map_err(|e| {
            self.fmt_err = Some(e);
            core::fmt::Error
        })
    }
}

/// Converts a length to the `u16` a length field holds, or says which limit it broke.
pub(crate) fn len_u16(what: &'static str, len: usize, max: usize) -> Result<u16, CellError> {
    if len > max {
        return Err(CellError::TooLong { what, len, max });
    }
    Ok(len as u16)
}

/// Converts a length to the `u8` a length field holds.
pub(crate) fn len_u8(what: &'static str, len: usize) -> Result<u8, CellError> {
    u8::try_from(len).map_err(|_| CellError::TooLong {
        what,
        len,
        max: u8::MAX as usize,
    })
}
