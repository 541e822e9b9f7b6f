//! A small blocking client of the daemon's HTTP API for the CLI commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use busbar_config::Addresses;
use clap::Args;
use serde_json::Value;

/// Where the daemon is and who is asking; shared by the HTTP commands.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// The daemon's HTTP URL. Default: the address in
    /// <data-dir>/run/addresses.json, else http://127.0.0.1:9479.
    #[arg(long, env = "BUSBAR_URL", global = true)]
    pub url: Option<String>,
    /// A token, when the daemon has [auth] tokens.
    #[arg(long, env = "BUSBAR_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Data directory of a local daemon, to find its address.
    #[arg(long, env = "BUSBAR_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A failed request.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made.
    Connect { url: String, message: String },
    /// The daemon answered with an error.
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// The daemon's answer to a successful request is not JSON the CLI
    /// can read (never taken for an empty answer).
    Undecodable { message: String },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect { url, message } => write!(
                f,
                "cannot connect to {url}: {message}: is `busbar serve` running? (set --url or BUSBAR_URL)"
            ),
            ClientError::Api {
                status,
                reason,
                message,
            } => {
                write!(f, "{message} ({reason}, HTTP {status})")?;
                match status {
                    401 => f.write_str(": pass --token or set BUSBAR_TOKEN"),
                    403 => f.write_str(": the token lacks a scope or this stream's tenant"),
                    _ => Ok(()),
                }
            }
            ClientError::Undecodable { message } => {
                write!(f, "the daemon's answer cannot be decoded: {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The client.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client whose requests give up after `timeout`.
    pub fn new(args: &HttpArgs, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: base_url(args),
            token: args.token.clone(),
        }
    }

    /// `GET path?query`, decoded as JSON.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        decode(&self.get_text(path, query)?)
    }

    /// `GET path?query`: the answer's text, for answers that carry events
    /// (decoded one event at a time, see `decode`).
    pub fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(*k, v);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    /// `POST path` with a body, decoded as JSON.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url).header("content-type", content_type);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        decode(&self.finish(req.send(body))?)
    }

    /// `POST path` with a JSON body, decoded as JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.post(path, "application/json", body.to_string().as_bytes())
    }

    /// `POST path` with a JSON body: the answer's text, for answers that
    /// carry events (decoded one event at a time, see `decode`).
    pub fn post_json_text(&self, path: &str, body: &Value) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.send(body.to_string().as_bytes()))
    }

    /// `POST path` with a JSON body: the answer's bytes (an archive).
    pub fn post_json_bytes(&self, path: &str, body: &Value) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish_bytes(req.send(body.to_string().as_bytes()))
    }

    /// `DELETE path`, decoded as JSON.
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.delete(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        decode(&self.finish(req.call())?)
    }

    /// The text of a successful answer, or the error the daemon answered.
    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, ClientError> {
        let bytes = self.finish_bytes(result)?;
        String::from_utf8(bytes).map_err(|e| ClientError::Undecodable {
            message: format!("the answer is not UTF-8: {e}"),
        })
    }

    /// The bytes of a successful answer, or the error the daemon answered.
    fn finish_bytes(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut resp = result.map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| ClientError::Connect {
                url: self.base.clone(),
                message: format!("reading the answer failed: {e}"),
            })?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            reason: value["error"].as_str().unwrap_or("http_error").to_owned(),
            message: value["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        })
    }
}

/// A successful answer's text as JSON; an empty one is `null`.
fn decode(text: &str) -> Result<Value, ClientError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| ClientError::Undecodable {
        message: e.to_string(),
    })
}

fn base_url(args: &HttpArgs) -> String {
    if let Some(url) = &args.url {
        return url.trim_end_matches('/').to_owned();
    }
    let from_run_file = std::fs::read(Addresses::path(&args.data_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Addresses>(&bytes).ok())
        .map(|a| format!("http://{}", a.http));
    from_run_file.unwrap_or_else(|| "http://127.0.0.1:9479".to_owned())
}

/// The `/api/streams/{stream}` path of a stream, validated so a typo fails
/// here with the naming rules rather than as a 404.
pub fn stream_path(stream: &str) -> anyhow::Result<String> {
    let name = busbar_event::StreamName::new(stream)
        .with_context(|| format!("`{stream}` is not a stream name"))?;
    Ok(format!("/api/streams/{name}"))
}
