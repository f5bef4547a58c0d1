//! Omi's audio bytes: raw PCM16 little-endian mono, published as is with its sample rate.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use bytes::Bytes;
use shared::EventKind;

use super::{OmiCaller, UidParam};
use crate::error::IngestError;
use crate::routes::AppState;
use crate::sources::{DedupKey, Queued};
use crate::sources::{Headers, Inbound, accept, header, read_body};

const OCTET_STREAM: &str = "application/octet-stream";

/// The sample rates accepted, in samples per second.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=192_000;

/// `POST /v1/omi/audio?uid=U&sample_rate=R`: raw PCM16 little-endian mono; an odd length is a
/// 400. Without `Idempotency-Key`, every chunk is its own event, identical or not.
#[utoipa::path(post, path = "/v1/omi/audio", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(UidParam, ("sample_rate" = u32, Query, minimum = 1000, maximum = 192000,
        description = "Samples per second"), DedupKey),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "PCM16 little-endian mono"),
    responses((status = 202, description = "Queued", body = Queued),
        (status = 415, description = "Not sent as application/octet-stream",
            body = shared::http::ErrorBody)))]
pub async fn audio(
    State(state): State<AppState>,
    caller: OmiCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let content_type = header(&headers, CONTENT_TYPE.as_str()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(OCTET_STREAM) {
        return Err(IngestError::UnsupportedMediaType {
            expected: OCTET_STREAM,
        });
    }
    let rate = caller.query.get("sample_rate").ok_or_else(|| {
        IngestError::parameter("sample_rate", "query parameter `sample_rate` is required")
    })?;
    let sample_rate = parse_sample_rate(rate)?;
    let raw = read_body(body, state.audio_body_limit).await?;
    let pcm = check_pcm(raw, ".")?;
    let inbound = audio_inbound(caller.uid, pcm.clone(), sample_rate);
    accept(&state, &headers, &pcm, inbound).await
}

/// The envelope of an audio chunk. Audio has no provider id and is never merged by content:
/// without an `Idempotency-Key`, each chunk accepted is its own event.
pub fn audio_inbound(uid: String, pcm: Bytes, sample_rate: u32) -> Inbound {
    Inbound {
        kind: EventKind::OmiAudio,
        uid,
        provider_id: None,
        payload: pcm,
        sample_rate: Some(sample_rate),
    }
}

/// An integer in [`SAMPLE_RATES`].
pub fn parse_sample_rate(raw: &str) -> Result<u32, IngestError> {
    raw.parse::<u32>()
        .ok()
        .filter(|rate| SAMPLE_RATES.contains(rate))
        .ok_or_else(|| {
            IngestError::parameter(
                "sample_rate",
                format!(
                    "query parameter `sample_rate` must be an integer from {} to {}, got {raw:?}",
                    SAMPLE_RATES.start(),
                    SAMPLE_RATES.end()
                ),
            )
        })
}

/// PCM16 must be whole samples: not empty, an even number of bytes. `field` names the field
/// of the body that holds it, or is `.` for the body itself.
pub fn check_pcm(pcm: Bytes, field: &str) -> Result<Bytes, IngestError> {
    let refuse = |problem: String| match field {
        "." => IngestError::InvalidBody(format!("the body: {problem}")),
        _ => IngestError::field(field, problem),
    };
    if pcm.is_empty() {
        return Err(refuse("no audio".into()));
    }
    if !pcm.len().is_multiple_of(2) {
        let problem = format!(
            "{} bytes is not a whole number of 16-bit samples",
            pcm.len()
        );
        return Err(refuse(problem));
    }
    Ok(pcm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    #[test]
    fn whole_pcm16_chunks_pass_and_partial_ones_do_not() {
        let sine = Bytes::from(fixture("omi/audio_sine440_half_16k.pcm"));
        assert_eq!(check_pcm(sine.clone(), ".").unwrap(), sine);
        let odd = Bytes::from(fixture("omi/audio_odd_length.pcm"));
        assert!(matches!(
            check_pcm(odd, "x"),
            Err(error) if error.is_invalid_body()
        ));
        assert!(matches!(
            check_pcm(Bytes::new(), "x"),
            Err(error) if error.is_invalid_body()
        ));
    }

    #[test]
    fn sample_rates_are_integers_in_range() {
        assert_eq!(parse_sample_rate("16000").unwrap(), 16_000);
        assert_eq!(parse_sample_rate("1000").unwrap(), 1_000);
        assert_eq!(parse_sample_rate("192000").unwrap(), 192_000);
        for bad in ["999", "192001", "16000.0", "-8000", "fast", ""] {
            assert!(parse_sample_rate(bad).is_err(), "{bad}");
        }
    }
}
