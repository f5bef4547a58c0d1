//! The metrics each request records, read back from `/metrics`: the handles ingest keeps for
//! them (`ingest::request_metrics`, the publisher's) count into the series their names and
//! labels say, once per request. The only test in its binary, so the process-wide recorder
//! holds this test's requests alone and the counts are exact.

mod harness;

use harness::{TestIngest, omi_query};
use shared::testkit::{fixture, sample};

/// The value of the series `series` (name and labels, as rendered) in a Prometheus scrape.
fn value(scrape: &str, series: &str) -> f64 {
    sample(scrape, series).unwrap_or_else(|| panic!("{series} is not in the scrape:\n{scrape}"))
}

#[tokio::test]
async fn each_request_counts_once_under_its_route_status_and_kind() {
    let ingest = TestIngest::start().await;
    for uid in ["user-1", "user-2", "user-3"] {
        let response = ingest
            .post_omi_transcript(&omi_query(uid), fixture("omi/realtime_transcript.json"))
            .await;
        assert_eq!(response.status(), 202);
    }
    let refused = ingest
        .post_omi_transcript(
            "key=wrong&uid=user-1",
            fixture("omi/realtime_transcript.json"),
        )
        .await;
    assert_eq!(refused.status(), 401);

    let scrape = ingest.service.scrape().await;
    let route = r#"route="/v1/omi/transcript""#;
    for (series, expected) in [
        (
            format!("ingest_requests_total{{{route},status=\"202\"}}"),
            3.0,
        ),
        (
            format!("ingest_requests_total{{{route},status=\"401\"}}"),
            1.0,
        ),
        (
            format!("ingest_request_duration_seconds_count{{{route}}}"),
            4.0,
        ),
        (
            r#"ingest_events_accepted_total{kind="omi_transcript"}"#.to_string(),
            3.0,
        ),
        (r#"ingest_publish_total{outcome="ack"}"#.to_string(), 3.0),
        ("ingest_publish_confirm_seconds_count".to_string(), 3.0),
    ] {
        assert_eq!(value(&scrape, &series), expected, "{series}");
    }
}
