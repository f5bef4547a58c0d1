//! Asleep: inference increments and session reports. Per-user aggregates are computed from the
//! reports when read, so a report stored once is counted once. A report's typed columns are read
//! with the function ingest checked them with, so a value that cannot fill its column leaves it
//! empty (it stays in `data`) and never fails the event.

use serde_json::Value;
use shared::Envelope;
use shared::payload::asleep::AsleepEvent;
use shared::payload::fields::FieldReader;
use sqlx::{Postgres, Transaction};

use super::{HandlerError, emit_if_stored, payload};
use crate::outbound::outbox::EventType;

pub async fn inference(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let event: AsleepEvent = payload(envelope)?;
    let data = serde_json::to_value(&event).expect("an Asleep event serializes");
    let seq_num = event.seq_num.ok_or_else(|| HandlerError::BadPayload {
        kind: envelope.kind,
        problem: "INFERENCE_COMPLETE without seq_num".into(),
    })?;
    let inserted = sqlx::query(
        "INSERT INTO sleep_inferences (session_id, seq_num, uid, inference_seq_num, sleep_stages, data, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&event.session_id)
    .bind(seq_num)
    .bind(&envelope.uid)
    .bind(event.inference_seq_num)
    .bind(event.extra.get("sleep_stages"))
    .bind(&data)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    emit_if_stored(tx, inserted, EventType::SleepInference, envelope, data).await?;
    Ok(())
}

pub async fn session_complete(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let event: AsleepEvent = payload(envelope)?;
    let data = serde_json::to_value(&event).expect("an Asleep event serializes");
    let columns = event.report_columns(&mut FieldReader::default());
    let stat = event.stat.clone().map(Value::Object);
    let session = event.session.clone().map(Value::Object);
    let inserted = sqlx::query(
        "INSERT INTO sleep_reports (session_id, uid, start_time, end_time, time_in_sleep_s, sleep_efficiency,
                                    session, stat, data, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (uid, session_id) DO NOTHING",
    )
    .bind(&event.session_id)
    .bind(&envelope.uid)
    .bind(columns.start_time)
    .bind(columns.end_time)
    .bind(columns.time_in_sleep_s)
    .bind(columns.sleep_efficiency)
    .bind(&session)
    .bind(&stat)
    .bind(&data)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    emit_if_stored(
        tx,
        inserted,
        EventType::SleepSessionCompleted,
        envelope,
        data,
    )
    .await?;
    Ok(())
}
