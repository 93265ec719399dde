//! Reading structure out of fuzzer bytes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[derive(Debug)]
pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
    pub(super) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub(super) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    pub(super) fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.byte() as usize % len
        }
    }
    pub(super) fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.index(items.len())]
    }
    /// A length byte, then that many bytes (fewer if the input ends).
    pub(super) fn bytes(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    pub(super) fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
