//! A minimal PNG encoder for the invite QR code (spec/relay.md §17): one-bit greyscale,
//! no interlace, one zlib-compressed IDAT (PNG specification, ISO/IEC 15948 §5, §11).
//! Small on purpose, so the relay needs no image crate.

use std::io::Write as _;

/// PNG signature (ISO/IEC 15948 §5.2).
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Append one chunk: length, type, data, CRC-32 of type and data (§5.3).
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    // The CRC of PNG is the ISO 3309 / ITU-T V.42 CRC-32, as gzip's (§5.3, annex D).
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Encode a black-and-white image of `width` × `height` pixels; `dark(x, y)` says
/// whether a pixel is black. Returns `None` for an empty or oversized image.
pub fn encode_bw(width: u32, height: u32, dark: impl Fn(u32, u32) -> bool) -> Option<Vec<u8>> {
    if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
        return None;
    }
    // Scanlines: filter type 0 (None) then the pixels, 1 bit each, MSB first, 1 = white
    // (§7.2, §9.2; greyscale bit depth 1).
    let row_bytes = (width as usize).div_ceil(8);
    let mut raw = Vec::with_capacity((row_bytes + 1) * height as usize);
    for y in 0..height {
        raw.push(0);
        let start = raw.len();
        raw.resize(start + row_bytes, 0);
        for x in 0..width {
            if !dark(x, y) {
                raw[start + (x / 8) as usize] |= 0x80 >> (x % 8);
            }
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).ok()?;
    let idat = z.finish().ok()?;

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 1, colour type 0 (greyscale), compression 0, filter 0, no interlace
    // (§11.2.2).
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);

    let mut out = Vec::with_capacity(SIGNATURE.len() + idat.len() + 64);
    out.extend_from_slice(&SIGNATURE);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Some(out)
}

/// A decoded PNG of the form [`encode_bw`] writes, for tests: width, height and the
/// dark pixels row by row. Checks the signature, every chunk CRC and the header.
#[cfg(test)]
pub fn decode_bw(png: &[u8]) -> Result<(u32, u32, Vec<Vec<bool>>), String> {
    use std::io::Read as _;
    let rest = png.strip_prefix(&SIGNATURE[..]).ok_or("no PNG signature")?;
    let mut pos = 0;
    let (mut header, mut idat, mut ended) = (None, Vec::new(), false);
    while pos < rest.len() {
        let field = |at: usize, n: usize| rest.get(at..at + n).ok_or("truncated chunk");
        let len = u32::from_be_bytes(field(pos, 4)?.try_into().map_err(|_| "len")?) as usize;
        let kind = field(pos + 4, 4)?;
        let data = field(pos + 8, len)?;
        let stored = u32::from_be_bytes(field(pos + 8 + len, 4)?.try_into().map_err(|_| "crc")?);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        if crc.sum() != stored {
            return Err(format!("bad CRC in {}", String::from_utf8_lossy(kind)));
        }
        match kind {
            b"IHDR" => header = Some(data.to_vec()),
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => ended = true,
            other => return Err(format!("unexpected chunk {other:?}")),
        }
        pos += 12 + len;
    }
    let header = header.ok_or("no IHDR")?;
    if !ended || header.len() != 13 || header[8..] != [1, 0, 0, 0, 0] {
        return Err(format!("unexpected header {header:?} or no IEND"));
    }
    let width = u32::from_be_bytes(header[0..4].try_into().map_err(|_| "w")?);
    let height = u32::from_be_bytes(header[4..8].try_into().map_err(|_| "h")?);
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let row_bytes = (width as usize).div_ceil(8);
    if raw.len() != (row_bytes + 1) * height as usize {
        return Err(format!("IDAT holds {} bytes", raw.len()));
    }
    let rows = raw
        .chunks(row_bytes + 1)
        .map(|row| {
            (0..width as usize)
                .map(|x| row[1 + x / 8] & (0x80 >> (x % 8)) == 0)
                .collect()
        })
        .collect();
    if raw.chunks(row_bytes + 1).any(|row| row[0] != 0) {
        return Err("unexpected filter type".into());
    }
    Ok((width, height, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_odd_width() {
        let dark = |x: u32, y: u32| (x * 7 + y * 3).is_multiple_of(5);
        let png = encode_bw(13, 4, dark).expect("encode");
        let (w, h, rows) = decode_bw(&png).expect("decode");
        assert_eq!((w, h), (13, 4));
        for (y, row) in rows.iter().enumerate() {
            for (x, &px) in row.iter().enumerate() {
                assert_eq!(px, dark(x as u32, y as u32), "pixel {x},{y}");
            }
        }
    }

    #[test]
    fn corruption_is_detected() {
        let mut png = encode_bw(8, 8, |x, _| x < 4).expect("encode");
        // Flip one bit in the IHDR width: the CRC no longer matches.
        png[16 + 3] ^= 1;
        assert!(decode_bw(&png).unwrap_err().contains("CRC"));
        assert!(encode_bw(0, 5, |_, _| true).is_none());
    }
}
