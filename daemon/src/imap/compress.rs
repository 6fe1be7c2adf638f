//! COMPRESS=DEFLATE (RFC 4978): after the tagged OK both directions carry one raw
//! deflate stream (no zlib header). Every flush ends with a sync flush so the peer can
//! decode all that was sent (RFC 4978 §4). The wrapper is symmetric, so tests use it as
//! the client side too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pending compressed output above which writes wait for the peer.
const HIGH_WATER: usize = 64 * 1024;

/// A stream whose bytes are deflated on the wire.
pub struct Deflate<S> {
    inner: S,
    decomp: Decompress,
    /// Compressed bytes received and not yet inflated.
    rin: Vec<u8>,
    rpos: usize,
    comp: Compress,
    /// Compressed bytes not yet written.
    wout: Vec<u8>,
    wpos: usize,
    /// Data was compressed since the last sync flush.
    dirty: bool,
}

impl<S> Deflate<S> {
    /// Wrap `inner`; `received` holds compressed bytes already read from it.
    pub fn new(inner: S, received: Vec<u8>) -> Deflate<S> {
        Deflate {
            inner,
            decomp: Decompress::new(false),
            rin: received,
            rpos: 0,
            comp: Compress::new(Compression::default(), false),
            wout: Vec::new(),
            wpos: 0,
            dirty: false,
        }
    }

    /// Deflate `input` into the pending output.
    fn compress(&mut self, input: &[u8], flush: FlushCompress) -> io::Result<()> {
        let mut pos = 0;
        loop {
            self.wout.reserve(input.len() - pos + 1024);
            let before = self.comp.total_in();
            self.comp
                .compress_vec(&input[pos..], &mut self.wout, flush)
                .map_err(io::Error::other)?;
            pos += (self.comp.total_in() - before) as usize;
            // Output space left over means everything pending came out.
            if pos >= input.len() && self.wout.len() < self.wout.capacity() {
                return Ok(());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflate<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wout.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wout[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wout.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let out = buf.initialize_unfilled();
            if out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let (in0, out0) = (this.decomp.total_in(), this.decomp.total_out());
            let status = this
                .decomp
                .decompress(&this.rin[this.rpos..], out, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (this.decomp.total_in() - in0) as usize;
            let produced = (this.decomp.total_out() - out0) as usize;
            this.rpos += consumed;
            if this.rpos == this.rin.len() {
                this.rin.clear();
                this.rpos = 0;
            }
            if produced > 0 {
                buf.advance(produced);
                return Poll::Ready(Ok(()));
            }
            if status == Status::StreamEnd {
                return Poll::Ready(Ok(()));
            }
            if consumed > 0 {
                continue;
            }
            // Nothing to inflate: read more compressed bytes.
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rin.extend_from_slice(rb.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wout.len() - this.wpos > HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.compress(buf, FlushCompress::None)?;
        this.dirty |= !buf.is_empty();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dirty {
            this.compress(&[], FlushCompress::Sync)?;
            this.dirty = false;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trip_with_sync_flushes() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Deflate::new(a, Vec::new());
        let mut b = Deflate::new(b, Vec::new());
        a.write_all(b"a NOOP\r\n").await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"a NOOP\r\n");
        // A large, compressible payload in both directions.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 61) as u8 + b' ').collect();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                b.write_all(&big).await.unwrap();
                b.flush().await.unwrap();
                b
            })
        };
        let mut back = vec![0u8; big.len()];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(back, big);
        writer.await.unwrap();
    }
}
