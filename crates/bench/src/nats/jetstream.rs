//! JetStream over [`Conn`]: the API requests a bench needs (streams,
//! durable pull consumers, their state), pulls, and acks
//! (<https://docs.nats.io/reference/reference-protocols/nats_api_reference>).

use super::{error, Conn, Incoming};
use crate::BenchError;

/// The inbox (and its subscription id) API answers come back on.
const API_INBOX: &str = "_INBOX.busbar-bench.api";
const API_SID: u32 = 99;

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    Memory,
    File,
}

impl Conn {
    /// A JetStream API request; its JSON answer, or the API's error.
    pub(crate) async fn request(
        &mut self,
        subject: &str,
        body: &str,
    ) -> Result<serde_json::Value, BenchError> {
        self.subscribe(API_INBOX, API_SID);
        self.publish(subject, Some(API_INBOX.as_bytes()), body.as_bytes());
        self.unsubscribe(API_SID, Some(1));
        self.flush().await?;
        loop {
            let Incoming::Msg {
                payload, status, ..
            } = self.next().await?
            else {
                continue;
            };
            if status {
                return Err(error(format!(
                    "no JetStream answer to {subject} (is JetStream enabled?)"
                )));
            }
            let v: serde_json::Value = serde_json::from_slice(&payload)
                .map_err(|e| error(format!("unreadable answer to {subject}: {e}")))?;
            if let Some(e) = v.get("error") {
                return Err(error(format!("{subject}: {e}")));
            }
            return Ok(v);
        }
    }

    /// Creates stream `name` holding `subject`'s messages.
    pub(crate) async fn create_stream(
        &mut self,
        name: &str,
        subject: &str,
        storage: Storage,
    ) -> Result<(), BenchError> {
        let storage = match storage {
            Storage::Memory => "memory",
            Storage::File => "file",
        };
        let config = serde_json::json!({
            "name": name, "subjects": [subject], "storage": storage,
            "retention": "limits", "num_replicas": 1,
        });
        self.request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &config.to_string(),
        )
        .await?;
        Ok(())
    }

    /// Deletes stream `name`.
    pub(crate) async fn delete_stream(&mut self, name: &str) -> Result<(), BenchError> {
        self.request(&format!("$JS.API.STREAM.DELETE.{name}"), "")
            .await?;
        Ok(())
    }

    /// Creates `durable`, an explicit-ack pull consumer of every message of
    /// `stream`: the JetStream form of a consumer group, its workers
    /// sharing it. An unacked message is redelivered after `ack_wait_ms`.
    pub(crate) async fn create_pull_consumer(
        &mut self,
        stream: &str,
        durable: &str,
        max_ack_pending: usize,
        ack_wait_ms: u64,
    ) -> Result<(), BenchError> {
        let config = serde_json::json!({
            "stream_name": stream,
            "config": {
                "durable_name": durable, "deliver_policy": "all", "ack_policy": "explicit",
                "ack_wait": ack_wait_ms * 1_000_000, "max_ack_pending": max_ack_pending,
                "replay_policy": "instant",
            },
        });
        self.request(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
            &config.to_string(),
        )
        .await?;
        Ok(())
    }

    /// `durable`'s state (`num_pending`, `num_ack_pending`, ...).
    pub(crate) async fn consumer_info(
        &mut self,
        stream: &str,
        durable: &str,
    ) -> Result<serde_json::Value, BenchError> {
        self.request(&format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"), "")
            .await
    }

    /// Queues a pull of up to `batch` messages of `durable`, delivered to
    /// `inbox`; the server ends it with a status message after
    /// `expires_ms` if fewer came.
    pub(crate) fn pull(
        &mut self,
        stream: &str,
        durable: &str,
        inbox: &str,
        batch: usize,
        expires_ms: u64,
    ) {
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}");
        let body = format!(
            "{{\"batch\":{batch},\"expires\":{}}}",
            expires_ms * 1_000_000
        );
        self.publish(&subject, Some(inbox.as_bytes()), body.as_bytes());
    }

    /// Queues the ack of the message whose reply subject is `reply`.
    pub(crate) fn ack(&mut self, reply: &[u8]) {
        super::push_pub(&mut self.0.out, reply, None, b"+ACK");
    }
}
