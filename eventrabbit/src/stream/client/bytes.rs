//! A bounds-checked reader of the stream protocol's big-endian fields: every frame the
//! broker sends is read through it, so a short or malformed frame is an error, never a
//! panic.

/// A cursor over a frame's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

/// A frame ended before a field it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Short;

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the frame ends before its fields do")
    }
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.rest.len() < n {
            return Err(Short);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A protocol string (`int16` length, `-1` for null, then UTF-8), read lossily: a
    /// broker's text never fails a frame for its encoding.
    pub(crate) fn string(&mut self) -> Result<String, Short> {
        let len = i16::from_be_bytes(self.array()?);
        let Ok(len) = usize::try_from(len) else {
            return Ok(String::new());
        };
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// An array's element count (`int32`, a negative one read as empty), bounded by the
    /// bytes left so that a corrupt count cannot make a caller reserve gigabytes.
    pub(crate) fn count(&mut self) -> Result<usize, Short> {
        let n = i32::from_be_bytes(self.array()?);
        Ok(usize::try_from(n).unwrap_or(0).min(self.rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_frames_are_errors_and_strings_are_lossy() {
        let mut c = Cursor::new(&[0, 1, 0xff]);
        assert_eq!(c.u16(), Ok(1));
        assert_eq!(c.u16(), Err(Short));
        let mut c = Cursor::new(&[0, 2, b'h', 0xff, 0xff, 0xff]);
        assert_eq!(c.string().unwrap(), "h\u{fffd}");
        assert_eq!(c.string().unwrap(), "", "-1 is null");
        let mut c = Cursor::new(&[0, 9, b'x']);
        assert_eq!(c.string(), Err(Short));
        let mut c = Cursor::new(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(c.count().unwrap(), 2, "bounded by what is left");
    }
}
