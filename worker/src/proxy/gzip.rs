//! The compression a client asks for (`accept-encoding: gzip`, as `shotgun_api3` sends it),
//! done once per answer rather than once per client: kept answers keep their gzipped copy
//! ([`super::answer_cache`]), and a site answer shared by a crowd is compressed once for all
//! of it ([`super::site::SiteResponse::for_client`]). What is left to the compression layer
//! (errors, pages) is compressed per response.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};

/// Whether the client accepts gzip (`accept-encoding: gzip`, not with `q=0`).
pub fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';').map(str::trim);
            it.next().is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
                && !it.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// Whether an answer is compressed for clients that ask: JSON only (file downloads pass
/// through as the site sent them).
pub fn compressible(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Gzips an answer at the fastest level (as the proxy's compression layer does), with this
/// thread's compressor: a new one per answer (what the compression layer makes) allocates
/// and clears a few hundred KiB, which cost as much as compressing a page of 50 entities.
pub fn gzip(body: &[u8]) -> Option<Bytes> {
    use flate2::{Compress, Compression, Crc, FlushCompress, Status};
    thread_local! {
        static DEFLATE: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::fast(), false));
    }
    // RFC 1952: no name, no time, "fastest" (XFL 4), unknown OS; then raw deflate, the CRC-32
    // and the length.
    let mut out = Vec::with_capacity(body.len() / 3 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    DEFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset();
        loop {
            let read = usize::try_from(d.total_in()).ok()?;
            out.reserve(body.len().saturating_sub(read) / 2 + 1024);
            match d
                .compress_vec(&body[read..], &mut out, FlushCompress::Finish)
                .ok()?
            {
                Status::StreamEnd => return Some(()),
                Status::Ok | Status::BufError => {}
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        out
    }

    #[test]
    fn gzip_with_the_reused_compressor_round_trips() {
        // Empty, small, and larger than one output reservation; each after the others on the
        // same thread's compressor.
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"code\":\"sh{}\"}},", i % 97).into_bytes())
            .collect();
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for body in [&b""[..], b"answer", &big, &noise, b"answer"] {
            let gz = gzip(body).unwrap();
            assert_eq!(gunzip(&gz), body);
        }
    }

    #[test]
    fn gzip_is_accepted_unless_refused() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
            accepted(&h)
        };
        assert!(with("gzip"));
        assert!(with("deflate, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; q = 0"));
        assert!(!with("br, identity"));
        assert!(!accepted(&HeaderMap::new()));
    }
}
