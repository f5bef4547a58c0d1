//! The requests a benchmark sends: Omi real-time transcript batches of 1-2 KB and 160 KB PCM
//! audio chunks (5 s at 16 kHz, random noise), spread over many users, each with its own `Idempotency-Key` so
//! every request is a new event.

use std::sync::Arc;

use bytes::Bytes;

use crate::load::{MakeRequest, Request};
use crate::stack::OMI_KEY;

/// How many distinct users (`uid`) the requests are spread over.
const USERS: u64 = 500;
const SEGMENTS: u64 = 6;
const SENTENCE: &str = "so the plan for tomorrow is to walk the new route before the meeting \
    and then write up what we saw on the way, including the bridge and the market";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    Transcript,
    Audio,
}

impl Body {
    pub fn label(self) -> &'static str {
        match self {
            Body::Transcript => "Omi transcript, 1-2 KB",
            Body::Audio => "Omi audio, 160 KB",
        }
    }

    /// Requests of this kind for run `run` (keys never repeat across runs).
    pub fn requests(self, run: &str) -> MakeRequest {
        let run = run.to_string();
        match self {
            Body::Transcript => Arc::new(move |n| transcript(&run, n)),
            Body::Audio => {
                let pcm = Bytes::from(pcm_chunk(16_000 * 5));
                Arc::new(move |n| audio(&run, n, pcm.clone()))
            }
        }
    }
}

/// The uid and dedup key the worker stores for a transcript request this module made with
/// idempotency key `key` (`<run>-<n>`); dedup keys are unique per source and uid.
pub fn stored_key(key: &str) -> (String, String) {
    let n = key.rsplit('-').next().and_then(|n| n.parse().ok());
    let n = n.expect("an idempotency key of this module");
    (user(n), format!("idempotency-key:{key}"))
}

fn user(n: u64) -> String {
    format!("user-{}", n % USERS)
}

/// Request `n`'s transcript: six segments of [`SENTENCE`] with ids and times of its own.
///
/// Written straight into one buffer (times as whole tenths, no float formatting): the
/// generator shares the cores with the server it measures, and building the body with
/// `format!` per segment cost about a quarter of its CPU per request.
fn transcript(run: &str, n: u64) -> Request {
    use std::fmt::Write;
    let uid = user(n);
    let mut body = String::with_capacity(256 + SEGMENTS as usize * (SENTENCE.len() + 160));
    let _ = write!(body, r#"{{"session_id":"{uid}","segments":["#);
    for index in 0..SEGMENTS {
        let speaker = index % 2;
        // 2.5 s a segment, each 2.4 s long, in tenths of a second.
        let start = (n / USERS * SEGMENTS + index) * 25;
        let end = start + 24;
        if index > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"id":"{run}-{n}-{index}","text":"{SENTENCE}","speaker":"SPEAKER_0{speaker}","speaker_id":{speaker},"is_user":{is_user},"person_id":null,"start":{}.{},"end":{}.{}}}"#,
            start / 10,
            start % 10,
            end / 10,
            end % 10,
            is_user = speaker == 0,
        );
    }
    body.push_str("]}");
    Request {
        path_and_query: format!("/v1/omi/transcript?key={OMI_KEY}&uid={uid}"),
        content_type: "application/json",
        body: Bytes::from(body),
        idempotency_key: Some(format!("{run}-{n}")),
    }
}

fn audio(run: &str, n: u64, pcm: Bytes) -> Request {
    Request {
        path_and_query: format!(
            "/v1/omi/audio?key={OMI_KEY}&uid=user-{}&sample_rate=16000",
            n % USERS
        ),
        content_type: "application/octet-stream",
        body: pcm,
        idempotency_key: Some(format!("{run}-{n}")),
    }
}

/// `samples` of PCM16 LE white noise at full scale, from a fixed seed (xorshift64). Noise is as
/// incompressible as bytes get, so what Postgres stores of it is what real audio (which
/// compresses little) costs; a tone or silence TOAST would store in a few per cent of its size.
fn pcm_chunk(samples: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..samples)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 48) as u16).to_le_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_bodies_are_omi_shaped_and_one_to_two_kilobytes() {
        let request = transcript("r", 1234);
        let size = request.body.len();
        assert!((1024..=2048).contains(&size), "{size} bytes");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["session_id"], "user-234");
        assert_eq!(
            body["segments"].as_array().unwrap().len(),
            SEGMENTS as usize
        );
        assert!(request.path_and_query.ends_with("uid=user-234"));
        let key = request.idempotency_key.as_deref().expect("a key");
        assert_eq!(
            stored_key(key).0,
            "user-234",
            "the uid is found from the key"
        );
        assert_eq!(request.idempotency_key.as_deref(), Some("r-1234"));
    }

    /// The body written into one buffer is byte for byte the one `format!` wrote before, so
    /// what the worker stores per event is unchanged.
    #[test]
    fn transcript_bodies_are_the_ones_format_wrote() {
        for n in [0, 1, 499, 500, 1234, 987_654_321] {
            let segments: Vec<String> = (0..SEGMENTS)
                .map(|index| {
                    let start = (n / USERS * SEGMENTS + index) as f64 * 2.5;
                    format!(
                        r#"{{"id":"r-{n}-{index}","text":"{SENTENCE}","speaker":"SPEAKER_0{speaker}","speaker_id":{speaker},"is_user":{is_user},"person_id":null,"start":{start:.1},"end":{end:.1}}}"#,
                        speaker = index % 2,
                        is_user = index % 2 == 0,
                        end = start + 2.4,
                    )
                })
                .collect();
            let expected = format!(
                r#"{{"session_id":"{}","segments":[{}]}}"#,
                user(n),
                segments.join(",")
            );
            assert_eq!(transcript("r", n).body, expected.as_bytes(), "request {n}");
        }
    }

    #[test]
    fn audio_bodies_are_five_seconds_at_16_khz() {
        assert_eq!(pcm_chunk(16_000 * 5).len(), 160_000);
    }

    /// Every byte value about equally often, as in noise, which no compressor can shrink: a
    /// tone's or silence's bytes are a few values repeated.
    #[test]
    fn audio_bodies_are_noise_with_every_byte_value_about_as_common() {
        let mut counts = [0usize; 256];
        for byte in pcm_chunk(16_000 * 5) {
            counts[byte as usize] += 1;
        }
        let share = 160_000 / 256;
        let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *least > share * 3 / 4 && *most < share * 5 / 4,
            "byte counts from {least} to {most}, {share} expected"
        );
    }
}
