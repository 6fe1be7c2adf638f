//! Byte encoding of table values: fixed-width little-endian integers and
//! length-prefixed strings, so rows stay small and need no serde format.

use super::StoreError;

#[derive(Default)]
pub(super) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(mut self, v: &str) -> Self {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub fn u32s(mut self, v: &[u32]) -> Self {
        self = self.u32(v.len() as u32);
        for &n in v {
            self = self.u32(n);
        }
        self
    }
    pub fn strs(mut self, v: &[String]) -> Self {
        self = self.u32(v.len() as u32);
        for s in v {
            self = self.str(s);
        }
        self
    }
}

pub(super) struct Dec<'a>(pub &'a [u8]);

fn short() -> StoreError {
    StoreError::Db("truncated row".into())
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(short());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn str(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| StoreError::Db("bad utf-8".into()))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn u32s(&mut self) -> Result<Vec<u32>, StoreError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 4 {
            return Err(short());
        }
        (0..n).map(|_| self.u32()).collect()
    }
    pub fn strs(&mut self) -> Result<Vec<String>, StoreError> {
        let n = self.u32()? as usize;
        (0..n).map(|_| self.str()).collect()
    }
}
