//! Reading request bodies within bounds: the raw size is capped while
//! reading, gzip bodies (the logger's `--logger_tls_compress`) are inflated
//! with a cap on the inflated size, so a gzip bomb costs at most that.

use std::io::Read;

use axum::body::Body;
use bytes::Bytes;
use flate2::read::GzDecoder;
use http::HeaderMap;
use http::header::CONTENT_ENCODING;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::EdgeError;

pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    max_body: usize,
    max_inflated: usize,
) -> Result<Bytes, EdgeError> {
    let raw = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                EdgeError::TooLarge(format!("request body exceeds {max_body} bytes"))
            } else {
                EdgeError::BadRequest(format!("request body could not be read: {e}"))
            }
        })?
        .to_bytes();
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => inflate(&raw, max_inflated).map(Bytes::from),
        Some(other) => Err(EdgeError::UnsupportedEncoding(format!(
            "content-encoding {other:?} is not supported (use gzip)"
        ))),
    }
}

pub(crate) fn inflate(raw: &[u8], max: usize) -> Result<Vec<u8>, EdgeError> {
    if raw.is_empty() {
        return Err(EdgeError::BadRequest(
            "gzip body is empty (agent-side compression failed?)".into(),
        ));
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max));
    GzDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| EdgeError::BadRequest(format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(EdgeError::TooLarge(format!(
            "inflated body exceeds {max} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::new(9));
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    #[test]
    fn inflates_within_bounds() {
        assert_eq!(
            inflate(&gz(b"{\"a\":1}"), 100).ok(),
            Some(b"{\"a\":1}".to_vec())
        );
        let bomb = gz(&vec![b'0'; 10_000_000]);
        assert!(bomb.len() < 20_000);
        assert!(matches!(
            inflate(&bomb, 1_000_000),
            Err(EdgeError::TooLarge(_))
        ));
        assert!(matches!(
            inflate(b"not gzip", 100),
            Err(EdgeError::BadRequest(_))
        ));
        assert!(matches!(inflate(b"", 100), Err(EdgeError::BadRequest(_))));
        let truncated = gz(b"{\"a\":1111111111}");
        assert!(inflate(&truncated[..truncated.len() / 2], 100).is_err());
    }
}
