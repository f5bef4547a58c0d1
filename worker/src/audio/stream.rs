//! A uid's audio stream: folding its stored chunks into level windows, in the order ingest
//! accepted them, and its listening status.
//!
//! Ordering: every change to a stream happens in a transaction that holds its `audio_streams`
//! row lock, taken with `FOR UPDATE SKIP LOCKED`, so one worker at a time owns a uid and others
//! move on. Only chunks accepted before one cut, `AUDIO_REORDER_MS` ago, are folded, by
//! `(received_at, event_id)`: a younger chunk waits for a later pass even when older ones of its
//! uid are due, so chunks that workers stored concurrently are all visible before any later
//! chunk is folded, and are folded in ingest's order. A chunk that commits later than that is
//! still folded, at the end of the stream, and counted in `audio_chunks_late_total`. Streams
//! stop only once every chunk of the uid is folded, so the flush at the end takes them all.

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::levels::{Meter, Window};
use crate::outbound::outbox::{EventType, emit};
use crate::settings::AudioSettings;

/// The persisted state of one uid's stream.
#[derive(sqlx::FromRow)]
struct Stream {
    uid: String,
    listening: bool,
    session_id: Option<Uuid>,
    sample_rate: Option<i32>,
    origin: Option<DateTime<Utc>>,
    window_samples: i32,
    next_window_start: i64,
    partial_samples: i32,
    partial_sum_squares: i64,
    partial_peak: i32,
    last_chunk_at: Option<DateTime<Utc>>,
    levels_emitted_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Chunk {
    event_id: Uuid,
    received_at: DateTime<Utc>,
    sample_rate: i32,
    pcm: Vec<u8>,
}

/// Folds the due chunks of every uid this worker can lock; returns how many uids it folded.
pub async fn fold_due(pool: &PgPool, settings: &AudioSettings) -> Result<usize, sqlx::Error> {
    let cut: DateTime<Utc> = sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(settings.reorder_delay.as_secs_f64())
        .fetch_one(pool)
        .await?;
    let uids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT uid FROM audio_chunks WHERE folded_at IS NULL AND received_at <= $1",
    )
    .bind(cut)
    .fetch_all(pool)
    .await?;
    let mut folded = 0;
    for uid in uids {
        let mut tx = crate::checkout::begin(pool).await?;
        sqlx::query("INSERT INTO audio_streams (uid) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&uid)
            .execute(&mut *tx)
            .await?;
        if let Some(mut stream) = lock(&mut tx, &uid).await? {
            fold_chunks(&mut tx, &mut stream, cut, settings).await?;
            folded += 1;
        }
        tx.commit().await?;
    }
    Ok(folded)
}

/// Stops the streams idle for `LISTENING_IDLE_MS`: flushes the partial window, sends the last
/// levels and `listening.status` stopped.
pub async fn stop_idle(pool: &PgPool, settings: &AudioSettings) -> Result<usize, sqlx::Error> {
    let mut tx = crate::checkout::begin(pool).await?;
    let idle: Vec<Stream> = sqlx::query_as(
        "SELECT * FROM audio_streams
         WHERE listening AND last_chunk_at < now() - make_interval(secs => $1)
         AND NOT EXISTS (SELECT 1 FROM audio_chunks c WHERE c.uid = audio_streams.uid AND c.folded_at IS NULL)
         FOR UPDATE SKIP LOCKED",
    )
    .bind(settings.listening_idle.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let count = idle.len();
    for mut stream in idle {
        stop(&mut tx, &mut stream).await?;
        save(&mut tx, &stream).await?;
    }
    tx.commit().await?;
    Ok(count)
}

async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    uid: &str,
) -> Result<Option<Stream>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM audio_streams WHERE uid = $1 FOR UPDATE SKIP LOCKED")
        .bind(uid)
        .fetch_optional(&mut **tx)
        .await
}

/// Folds the uid's unfolded chunks accepted at or before `cut`, in ingest's order.
async fn fold_chunks(
    tx: &mut Transaction<'_, Postgres>,
    stream: &mut Stream,
    cut: DateTime<Utc>,
    settings: &AudioSettings,
) -> Result<(), sqlx::Error> {
    let chunks: Vec<Chunk> = sqlx::query_as(
        "SELECT event_id, received_at, sample_rate, pcm FROM audio_chunks
         WHERE uid = $1 AND folded_at IS NULL AND received_at <= $2
         ORDER BY received_at, event_id",
    )
    .bind(&stream.uid)
    .bind(cut)
    .fetch_all(&mut **tx)
    .await?;
    for chunk in &chunks {
        if stream
            .last_chunk_at
            .is_some_and(|last| chunk.received_at < last)
        {
            metrics::counter!("audio_chunks_late_total").increment(1);
        }
        if needs_new_session(stream, chunk, settings) {
            if stream.listening {
                stop(tx, stream).await?;
            }
            start(tx, stream, chunk, settings).await?;
        }
        let mut meter = meter_of(stream);
        let mut windows = Vec::new();
        meter.feed(&chunk.pcm, &mut windows);
        store_windows(tx, stream, &windows).await?;
        keep_meter(stream, meter);
        stream.last_chunk_at = Some(
            stream
                .last_chunk_at
                .map_or(chunk.received_at, |last| last.max(chunk.received_at)),
        );
        mark_folded(tx, chunk.event_id).await?;
    }
    let due = stream.levels_emitted_at.is_none_or(|at| {
        Utc::now() - at >= Span::from_std(settings.level_interval).unwrap_or_default()
    });
    if due {
        emit_levels(tx, stream).await?;
    }
    save(tx, stream).await
}

fn needs_new_session(stream: &Stream, chunk: &Chunk, settings: &AudioSettings) -> bool {
    let idle = Span::from_std(settings.listening_idle).unwrap_or_default();
    !stream.listening
        || stream.sample_rate != Some(chunk.sample_rate)
        || stream
            .last_chunk_at
            .is_some_and(|last| chunk.received_at - last > idle)
}

/// A new listening session: the stream's clock starts at the chunk's first sample.
async fn start(
    tx: &mut Transaction<'_, Postgres>,
    stream: &mut Stream,
    chunk: &Chunk,
    settings: &AudioSettings,
) -> Result<(), sqlx::Error> {
    let seconds = chunk.pcm.len() as f64 / 2.0 / chunk.sample_rate as f64;
    let session_id = Uuid::now_v7();
    let meter = Meter::new(chunk.sample_rate as u32, settings.window_ms);
    keep_meter(stream, meter);
    stream.listening = true;
    stream.session_id = Some(session_id);
    stream.sample_rate = Some(chunk.sample_rate);
    stream.origin = Some(chunk.received_at - Span::microseconds((seconds * 1e6) as i64));
    stream.levels_emitted_at = None;
    emit_status(tx, stream, true).await
}

async fn stop(tx: &mut Transaction<'_, Postgres>, stream: &mut Stream) -> Result<(), sqlx::Error> {
    let mut meter = meter_of(stream);
    if let Some(last) = meter.flush() {
        store_windows(tx, stream, &[last]).await?;
    }
    keep_meter(stream, meter);
    emit_levels(tx, stream).await?;
    stream.listening = false;
    emit_status(tx, stream, false).await
}

fn meter_of(stream: &Stream) -> Meter {
    Meter {
        window_samples: stream.window_samples as u32,
        next_window_start: stream.next_window_start as u64,
        partial_samples: stream.partial_samples as u32,
        partial_sum_squares: stream.partial_sum_squares as u64,
        partial_peak: stream.partial_peak as u32,
    }
}

fn keep_meter(stream: &mut Stream, meter: Meter) {
    stream.window_samples = meter.window_samples as i32;
    stream.next_window_start = meter.next_window_start as i64;
    stream.partial_samples = meter.partial_samples as i32;
    stream.partial_sum_squares = meter.partial_sum_squares as i64;
    stream.partial_peak = meter.partial_peak as i32;
}

/// The wall-clock time of a sample of the stream.
fn time_of(stream: &Stream, sample: u64) -> DateTime<Utc> {
    let rate = stream.sample_rate.unwrap_or(16_000).max(1) as f64;
    let origin = stream.origin.unwrap_or_else(Utc::now);
    origin + Span::microseconds((sample as f64 / rate * 1e6).round() as i64)
}

async fn store_windows(
    tx: &mut Transaction<'_, Postgres>,
    stream: &Stream,
    windows: &[Window],
) -> Result<(), sqlx::Error> {
    if windows.is_empty() {
        return Ok(());
    }
    let starts: Vec<DateTime<Utc>> = windows
        .iter()
        .map(|w| time_of(stream, w.start_sample))
        .collect();
    let ends: Vec<DateTime<Utc>> = windows
        .iter()
        .map(|w| time_of(stream, w.start_sample + w.samples as u64))
        .collect();
    let rms: Vec<Option<f64>> = windows.iter().map(|w| w.rms_dbfs).collect();
    let peaks: Vec<Option<f64>> = windows.iter().map(|w| w.peak_dbfs).collect();
    let levels: Vec<f64> = windows.iter().map(|w| w.level).collect();
    sqlx::query(
        "INSERT INTO audio_windows (uid, session_id, start_at, end_at, rms_dbfs, peak_dbfs, level)
         SELECT $1, $2, * FROM UNNEST($3::timestamptz[], $4::timestamptz[], $5::float8[], $6::float8[], $7::float8[])
         ON CONFLICT (uid, start_at) DO NOTHING",
    )
    .bind(&stream.uid)
    .bind(stream.session_id)
    .bind(&starts)
    .bind(&ends)
    .bind(&rms)
    .bind(&peaks)
    .bind(&levels)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn mark_folded(
    tx: &mut Transaction<'_, Postgres>,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE audio_chunks SET folded_at = now() WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// A stored window, as the API lists it and `audio.level` events carry it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LevelWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Null for digital silence.
    pub rms_dbfs: Option<f64>,
    /// Null for digital silence.
    pub peak_dbfs: Option<f64>,
    /// 0 to 100: `(rms_dbfs + 60) / 60 * 100`, clamped; 0 for silence.
    pub level: f64,
}

/// One `audio.level` event with every window not sent yet (none when there are none).
async fn emit_levels(
    tx: &mut Transaction<'_, Postgres>,
    stream: &mut Stream,
) -> Result<(), sqlx::Error> {
    let mut windows: Vec<LevelWindow> = sqlx::query_as(
        "UPDATE audio_windows SET emitted = true WHERE uid = $1 AND NOT emitted
         RETURNING start_at AS start, end_at AS end, rms_dbfs, peak_dbfs, level",
    )
    .bind(&stream.uid)
    .fetch_all(&mut **tx)
    .await?;
    windows.sort_by_key(|window| window.start);
    let Some(latest) = windows.last() else {
        return Ok(());
    };
    let data = json!({
        "uid": stream.uid,
        "sessionId": stream.session_id,
        "audioLevel": latest.level,
        "timestamp": latest.end,
        "windows": windows,
    });
    emit(tx, EventType::AudioLevel, Some(&stream.uid), data).await?;
    stream.levels_emitted_at = Some(Utc::now());
    Ok(())
}

async fn emit_status(
    tx: &mut Transaction<'_, Postgres>,
    stream: &Stream,
    listening: bool,
) -> Result<(), sqlx::Error> {
    let data = json!({
        "uid": stream.uid,
        "isListening": listening,
        "sessionId": stream.session_id,
        "status": if listening { "started" } else { "stopped" },
    });
    emit(tx, EventType::ListeningStatus, Some(&stream.uid), data)
        .await
        .map(drop)
}

async fn save(tx: &mut Transaction<'_, Postgres>, stream: &Stream) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audio_streams SET listening = $2, session_id = $3, sample_rate = $4, origin = $5,
             window_samples = $6, next_window_start = $7, partial_samples = $8,
             partial_sum_squares = $9, partial_peak = $10, last_chunk_at = $11,
             levels_emitted_at = $12, updated_at = now()
         WHERE uid = $1",
    )
    .bind(&stream.uid)
    .bind(stream.listening)
    .bind(stream.session_id)
    .bind(stream.sample_rate)
    .bind(stream.origin)
    .bind(stream.window_samples)
    .bind(stream.next_window_start)
    .bind(stream.partial_samples)
    .bind(stream.partial_sum_squares)
    .bind(stream.partial_peak)
    .bind(stream.last_chunk_at)
    .bind(stream.levels_emitted_at)
    .execute(&mut **tx)
    .await
    .map(drop)
}
