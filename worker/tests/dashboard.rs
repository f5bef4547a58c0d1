//! `/dashboard` in a real browser (headless Chromium): a wrong token is refused with a clear
//! message; an operator signs in, sees the lines a user's session already had, then watches
//! the user's audio and transcript arrive live through ingest, keeps watching across a worker
//! restart and a reload without losing or repeating an event, sees the pipeline's overview,
//! retries a failed delivery and redrives a dead letter from the page, uses it at phone width
//! and with the keyboard, and signs out; the page requests nothing from anywhere but the
//! worker. Screenshots of every view land in `target/screenshots/`.

mod harness;

use std::time::{Duration, Instant};

use harness::browser::Browser;
use harness::{ADMIN_TOKEN, Receiver, Reply, TestPipeline};
use serde_json::{Value, json};
use shared::testkit::{eventually, fixture};
use thirtyfour::Key;

/// The sender's session id in `omi/realtime_transcript.json`.
const SESSION: &str = "u7ZkQ2fW9xLmN3pR";
const FIRST_LINE: &str = "Okay, let's go over the launch plan.";
const SECOND_LINE: &str = "Sure. The firmware build is ready for review.";
const SAID_BEFORE: &str = "Said before the page opened.";
const SAID_WHILE_DOWN: &str = "Said while the worker was down.";
/** The stream position before every event. */
const BEFORE_EVERY_EVENT: &str = "0-00000000-0000-0000-0000-000000000000";

/// Opens the dashboard of the pipeline's first worker and signs in; a wrong token first, whose
/// refusal must say what is wrong (screenshot `sign-in-refused`).
async fn signed_in(pipeline: &TestPipeline) -> Browser {
    let browser = Browser::start().await;
    browser.goto(&pipeline.workers[0].url("/dashboard")).await;
    browser.keep_every_request().await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("#sign-in-form button[type=submit]").await;
    browser
        .wait_for_text("#sign-in-error", "that is not the admin token")
        .await;
    browser.screenshot("sign-in-refused").await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#sign-in-form button[type=submit]").await;
    browser.wait_for_text("#view h2", "Overview").await;
    browser
}

/// Posts the sine fixture as `uid`'s audio, 100 ms a chunk at the pace it plays, for `period`.
async fn keep_talking(pipeline: &TestPipeline, uid: &str, period: Duration) {
    let pcm = fixture("omi/audio_sine440_half_16k.pcm");
    let until = Instant::now() + period;
    while Instant::now() < until {
        for chunk in pcm.chunks(3200) {
            pipeline.post_omi_audio(uid, chunk, chunk.len()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One more segment of the fixture's session, posted through ingest.
async fn post_line(pipeline: &TestPipeline, uid: &str, text: &str) {
    let batch = json!({
        "session_id": SESSION,
        "segments": [{"id": format!("segment-{text}"), "text": text, "speaker": "SPEAKER_00",
                      "speaker_id": 0, "is_user": true, "start": 20.0, "end": 22.0}],
    });
    pipeline
        .post_omi_transcript(uid, batch.to_string().into_bytes(), None)
        .await;
}

/// Each of `lines` is shown exactly once in the transcript, and nothing else is.
async fn each_line_once(browser: &Browser, lines: &[&str]) {
    // Long enough for a repeat on its way to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for line in lines {
        let count = browser.count_with_text("#transcript li", line).await;
        assert_eq!(count, 1, "{line:?} is shown once");
    }
    let all = browser.count_with_text("#transcript li", "").await;
    assert_eq!(all, lines.len() as u64, "no other line");
}

#[tokio::test]
async fn the_live_view_follows_a_user_and_resumes_after_a_worker_restart_without_losing_an_event() {
    let mut pipeline = TestPipeline::start().await;
    let uid = "u-live";
    post_line(&pipeline, uid, SAID_BEFORE).await;
    eventually(20, "the line stored", || async {
        let sessions = pipeline
            .admin_get(&format!("/v1/users/{uid}/sessions"))
            .await;
        sessions["items"].get(0).cloned()
    })
    .await;
    let browser = signed_in(&pipeline).await;
    browser.click("nav a[href='#/users']").await;
    browser.type_into("#watch-uid", uid).await;
    browser.press(Key::Enter).await;
    browser
        .wait_for_text("#connection", "Watching u-live")
        .await;
    browser.wait_for_text("#transcript li", SAID_BEFORE).await;

    let talking = keep_talking(&pipeline, uid, Duration::from_secs(3));
    let heard = async {
        browser
            .wait_for(
                "the meter to move and the listening indicator to light",
                "document.getElementById('level').value > 50 \
                 && document.getElementById('listening').textContent === 'listening'",
            )
            .await;
        // While the audio still comes: the meter up, the indicator lit, the chart drawing.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        browser.screenshot("user-live").await;
    };
    tokio::join!(talking, heard);
    browser.wait_for_text("#listening", "not listening").await;

    pipeline
        .post_omi("/v1/omi/transcript", uid, "omi/realtime_transcript.json")
        .await;
    browser.wait_for_text("#transcript li", FIRST_LINE).await;
    let speakers = browser
        .wait_for(
            "both speakers' lines",
            "[...document.querySelectorAll('#transcript li')].length === 3 \
             && [...document.querySelectorAll('#transcript li .speaker')].map((s) => s.className)",
        )
        .await;
    assert_eq!(
        speakers,
        json!([
            "speaker speaker-0",
            "speaker speaker-0",
            "speaker speaker-1"
        ]),
        "speakers are told apart"
    );
    each_line_once(&browser, &[SAID_BEFORE, FIRST_LINE, SECOND_LINE]).await;

    let addr = pipeline.stop_worker(0).await;
    browser
        .wait_for_text("#connection", "Connection lost")
        .await;
    post_line(&pipeline, uid, SAID_WHILE_DOWN).await;
    pipeline.start_worker_at(0, addr).await;
    browser
        .wait_for_text("#transcript li", SAID_WHILE_DOWN)
        .await;
    browser
        .wait_for_text("#connection", "Watching u-live")
        .await;
    let every_line = [SAID_BEFORE, FIRST_LINE, SECOND_LINE, SAID_WHILE_DOWN];
    each_line_once(&browser, &every_line).await;

    // A reload that resumes from before every event: each line comes from the API and again
    // from the stream, and is shown once.
    browser
        .eval(&format!(
            "sessionStorage.setItem('last-event-id:{uid}', '{BEFORE_EVERY_EVENT}'); location.reload();"
        ))
        .await;
    browser.keep_every_request().await;
    browser
        .wait_for_text("#connection", "Watching u-live")
        .await;
    browser
        .wait_for_text("#transcript li", SAID_WHILE_DOWN)
        .await;
    each_line_once(&browser, &every_line).await;

    pipeline
        .post_omi("/v1/omi/conversation", uid, "omi/conversation_created.json")
        .await;
    browser
        .wait_for_text("#sessions", "Launch plan review")
        .await;
    let vtt = browser
        .eval_promise("fetch(document.querySelector('#sessions a.vtt').href).then((r) => r.text())")
        .await;
    let vtt = vtt.as_str().expect("the WebVTT text");
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    assert!(vtt.contains(SAID_WHILE_DOWN), "{vtt}");

    pipeline
        .post_asleep(uid, "asleep/session_complete_nested.json")
        .await;
    browser
        .wait_for(
            "the hypnogram",
            "document.querySelector('#hypnogram path.stages')",
        )
        .await;
    browser.wait_for_text("#sleep-stats", "88.24").await;
    let load_error = browser
        .eval("return document.getElementById('load-error').textContent;")
        .await;
    assert_eq!(load_error, "", "every part of the view loaded");
    browser.screenshot("user").await;

    browser.phone_sized().await;
    assert!(
        browser.fits_the_width().await,
        "no sideways scrolling at phone width"
    );
    browser.screenshot("phone-user").await;

    browser.click("#sign-out").await;
    browser
        .wait_for(
            "the sign-in form",
            "!document.getElementById('sign-in').hidden",
        )
        .await;
    let status = browser
        .eval_promise("fetch('/v1/auth/session').then((r) => r.status)")
        .await;
    assert_eq!(status, 401, "signed out");
    browser.requested_only_loopback().await;
    browser.quit().await;
}

/// The first delivery of `endpoint_id` with `status`, once there is one.
async fn delivery_with_status(pipeline: &TestPipeline, endpoint_id: &str, status: &str) -> Value {
    let path = format!("/v1/deliveries?endpoint_id={endpoint_id}&status={status}");
    eventually(20, &format!("a {status} delivery"), || async {
        let page = pipeline.admin_get(&path).await;
        page["items"].get(0).cloned()
    })
    .await
}

#[tokio::test]
async fn the_views_show_the_pipeline_and_retry_and_redrive_from_the_page() {
    let pipeline = TestPipeline::start().await;
    let receiver = Receiver::scripted(vec![Reply::status(400)], Reply::status(200)).await;
    let endpoint = pipeline
        .create_endpoint(json!({"url": receiver.url(), "event_types": ["transcript.segment"]}))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let disabled_url = format!("{}/disabled", receiver.url());
    pipeline
        .create_endpoint(
            json!({"url": disabled_url, "event_types": ["memory.created"], "enabled": false}),
        )
        .await;
    pipeline
        .post_omi(
            "/v1/omi/transcript",
            "u-views",
            "omi/realtime_transcript.json",
        )
        .await;
    let failed = delivery_with_status(&pipeline, &endpoint_id, "failed").await;
    delivery_with_status(&pipeline, &endpoint_id, "succeeded").await;
    pipeline.broker.publish(&harness::poison("u-views")).await;
    eventually(20, "a dead letter", || async {
        let page = pipeline.admin_get("/v1/dead-letters").await;
        page["items"].get(0).cloned()
    })
    .await;

    let browser = signed_in(&pipeline).await;
    browser.wait_for_text("#failed", "1").await;
    browser.wait_for_text("#dead-letters-waiting", "1").await;
    browser
        .wait_for(
            "a rate from two scrapes",
            "document.getElementById('events-in').textContent !== '—'",
        )
        .await;
    browser.wait_for_text("#endpoint-health", "50.0 %").await;
    browser.wait_for_text("#endpoints-disabled", "1").await;
    browser.screenshot("overview").await;

    // With the keyboard: from the top of the page, Tab to the Endpoints link and press Enter.
    browser
        .eval("document.activeElement.blur(); window.scrollTo(0, 0);")
        .await;
    let mut on_endpoints = false;
    for _ in 0..12 {
        browser.press(Key::Tab).await;
        let focused = browser
            .eval("return document.activeElement.textContent;")
            .await;
        if focused == "Endpoints" {
            on_endpoints = true;
            break;
        }
    }
    assert!(on_endpoints, "Tab reaches the Endpoints link");
    let outline = browser
        .eval("return getComputedStyle(document.activeElement).outlineStyle;")
        .await;
    assert_ne!(outline, "none", "the focus is visible");
    browser.press(Key::Enter).await;
    browser
        .wait_for("the endpoints view", "location.hash === '#/endpoints'")
        .await;
    browser
        .wait_for(
            "the view's title focused",
            "document.activeElement.classList.contains('view-title')",
        )
        .await;
    browser.wait_for_text("#endpoints", &receiver.url()).await;
    browser.wait_for_text("#endpoints", "50.0 %").await;
    browser.wait_for_text("#endpoints", "closed").await;
    browser
        .wait_for_text("#endpoints", "disabled: created disabled")
        .await;
    browser.screenshot("endpoints").await;

    browser
        .click(&format!("a[href='#/endpoints/{endpoint_id}']"))
        .await;
    let failed_id = failed["id"].as_str().unwrap();
    let retry = format!("button[data-key='retry-{failed_id}']");
    browser.element(&retry).await;
    browser.screenshot("endpoint").await;
    browser.click(&retry).await;
    browser
        .wait_for_text("#delivery-action", "is queued again")
        .await;
    eventually(20, "the retried delivery to succeed", || async {
        let delivery = pipeline
            .admin_get(&format!("/v1/deliveries/{failed_id}"))
            .await;
        (delivery["status"] == "succeeded").then_some(())
    })
    .await;
    browser
        .wait_for(
            "no failed delivery shown",
            "!document.querySelector('#deliveries .badge.failed')",
        )
        .await;

    browser.click("nav a[href='#/dead-letters']").await;
    let redrive = "#dead-letters button[data-key^='redrive-']";
    browser.element(redrive).await;
    browser.screenshot("dead-letters").await;
    browser.click(redrive).await;
    browser
        .wait_for_text("#dead-letter-action", "back on the events queue")
        .await;
    let letters = pipeline.admin_get("/v1/dead-letters").await;
    assert!(
        letters["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|letter| letter["redriven_at"].is_string()),
        "{letters}"
    );

    browser.click("nav a[href='#/users']").await;
    browser.wait_for_text("#users a", "u-views").await;
    browser.screenshot("users").await;

    browser.phone_sized().await;
    for (view, shows) in [
        ("#/overview", "#overview-tiles"),
        ("#/users", "#users"),
        ("#/endpoints", "#endpoints"),
        (&*format!("#/endpoints/{endpoint_id}"), "#deliveries"),
        ("#/dead-letters", "#dead-letters"),
    ] {
        browser.eval(&format!("location.hash = '{view}';")).await;
        browser.wait_for_text(shows, "").await;
        browser
            .wait_for(
                view,
                &format!("document.querySelector('{shows}').children.length > 0"),
            )
            .await;
        assert!(
            browser.fits_the_width().await,
            "{view}: no sideways scrolling at phone width"
        );
    }
    browser.eval("location.hash = '#/overview';").await;
    browser.wait_for_text("#endpoint-health", "%").await;
    browser
        .wait_for(
            "a rate from two scrapes",
            "document.getElementById('events-in').textContent !== '—'",
        )
        .await;
    browser.screenshot("phone-overview").await;
    browser.requested_only_loopback().await;
    browser.quit().await;
}
