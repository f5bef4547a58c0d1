//! Property tests: every inbound parser, fed arbitrary bytes (random, or a fixture with random
//! damage), returns a value or a 400 `InvalidBody`; it never panics and never fails otherwise.

use bytes::Bytes;
use ingest::error::IngestError;
use ingest::sources::omi::audio::check_pcm;
use ingest::sources::omi::conversation::{parse_conversation, parse_day_summary};
use ingest::sources::omi::transcript::parse_transcript;
use ingest::sources::omi::webhook::parse_webhook;
use ingest::sources::{LenientQuery, asleep::parse_asleep, reflector::parse_reflector};
use proptest::prelude::*;
use shared::testkit::fixture;

type Parser = fn(&[u8]) -> Result<(), IngestError>;

/// Every body parser, by name, with its result reduced to "accepted or why not".
const PARSERS: &[(&str, Parser)] = &[
    ("transcript", |body| parse_transcript(body, "u1").map(drop)),
    ("conversation", |body| parse_conversation(body).map(drop)),
    ("day summary", |body| parse_day_summary(body).map(drop)),
    ("webhook", |body| {
        parse_webhook(body, "u1", 16_000).map(drop)
    }),
    ("audio", |body| {
        check_pcm(Bytes::copy_from_slice(body), "audio").map(drop)
    }),
    ("asleep", |body| parse_asleep(body).map(drop)),
    ("reflector", |body| parse_reflector(body).map(drop)),
];

const FIXTURES: &[&str] = &[
    "omi/realtime_transcript.json",
    "omi/thalamus_batch.json",
    "omi/conversation_created.json",
    "omi/day_summary.json",
    "omi-envelope/memory_created.json",
    "omi-envelope/transcript_segment.json",
    "omi-envelope/audio_bytes.json",
    "asleep/inference_complete_nested.json",
    "asleep/session_complete_flat.json",
    "reflector/transcript_completed.json",
];

fn only_ok_or_invalid_body(body: &[u8]) {
    for (name, parse) in PARSERS {
        match parse(body) {
            Ok(()) => {}
            Err(error) if error.is_invalid_body() => {}
            Err(other) => panic!("{name}: {other:?} for {body:?}"),
        }
    }
}

/// A fixture with a few bytes overwritten and possibly cut short.
fn damaged_fixture() -> impl Strategy<Value = Vec<u8>> {
    let edits = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8);
    (
        prop::sample::select(FIXTURES),
        edits,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(file, edits, cut)| {
            let mut body = fixture(file);
            for (at, byte) in edits {
                let index = at.index(body.len());
                body[index] = byte;
            }
            body.truncate(cut.index(body.len() + 1));
            body
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        only_ok_or_invalid_body(&body);
    }

    #[test]
    fn damaged_fixtures_never_panic(body in damaged_fixture()) {
        only_ok_or_invalid_body(&body);
    }

    #[test]
    fn arbitrary_query_strings_never_panic(raw in proptest::collection::vec(any::<char>(), 0..64)) {
        let raw: String = raw.into_iter().collect();
        let query = LenientQuery::parse(&raw);
        let _ = query.get("uid");
    }
}

#[test]
fn very_deep_nesting_is_refused_not_a_stack_overflow() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let depth = 100_000;
        let body = format!("{}{}", open.repeat(depth), close.repeat(depth));
        for (name, parse) in PARSERS {
            if *name == "audio" {
                continue;
            }
            assert!(
                parse(body.as_bytes()).is_err_and(|error| error.is_invalid_body()),
                "{name}"
            );
        }
    }
}

#[test]
fn the_fixtures_themselves_parse_somewhere() {
    for file in FIXTURES {
        let body = fixture(file);
        let accepted = PARSERS
            .iter()
            .filter(|(_, parse)| parse(&body).is_ok())
            .count();
        assert!(
            accepted > 0,
            "{file} parses nowhere, so damaging it tests little"
        );
    }
}
