//! `busbar groups ...`: consumer groups over the HTTP API.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use busbar_config::HumanDuration;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{stream_path, Client, HttpArgs};
use crate::decode::{report, IdAt, Page};
use crate::read::{format_ms, text, write_rows};

/// `busbar groups` arguments.
#[derive(Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    pub command: GroupsCommand,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What to do with groups.
#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List a stream's groups with their lag and pending counts.
    List {
        /// The stream.
        stream: String,
    },
    /// Describe one group and its consumers.
    Info {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// Create a group (the stream is created if needed).
    Create(CreateArgs),
    /// Delete a group and its pending list.
    Delete {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// Show delivered, unacknowledged events.
    Pending {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Stop delivery to a group, or with --all to every group.
    Pause(PauseArgs),
    /// Restart delivery to a group, or with --all to every group.
    Resume(PauseArgs),
    /// Read events as a consumer of the group and print them.
    Consume(ConsumeArgs),
}

/// `busbar groups create` arguments.
#[derive(Args)]
pub struct CreateArgs {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// Where it starts: `end` (new events only), `beginning`, or an id.
    #[arg(long, default_value = "end")]
    pub start: String,
    /// Deliveries before an event is dead-lettered.
    #[arg(long)]
    pub max_deliver: Option<u32>,
    /// How long a delivery may stay unacknowledged, e.g. 30s.
    #[arg(long)]
    pub ack_wait: Option<HumanDuration>,
    /// Most pending events per consumer.
    #[arg(long)]
    pub max_pending: Option<u32>,
    /// Drop events out of attempts instead of dead-lettering them.
    #[arg(long)]
    pub drop_exhausted: bool,
}

/// `busbar groups pause|resume` arguments.
#[derive(Args)]
pub struct PauseArgs {
    /// The stream.
    pub stream: Option<String>,
    /// The group.
    pub group: Option<String>,
    /// All delivery, every group of every stream.
    #[arg(long, conflicts_with_all = ["stream", "group"])]
    pub all: bool,
}

/// `busbar groups consume` arguments.
#[derive(Args)]
pub struct ConsumeArgs {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The consumer name.
    #[arg(long, default_value = "busbar-cli")]
    pub consumer: String,
    /// At most this many events per read.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Wait this long for events when there are none, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub block: HumanDuration,
    /// Acknowledge what was printed (otherwise it stays pending and comes
    /// back after the group's ack_wait).
    #[arg(long)]
    pub ack: bool,
    /// Keep reading until interrupted.
    #[arg(long)]
    pub follow: bool,
}

/// Runs a `busbar groups` command.
pub fn run(args: GroupsArgs) -> anyhow::Result<ExitCode> {
    let http = &args.http;
    let client = Client::new(http, Duration::from_secs(30));
    match args.command {
        GroupsCommand::List { stream } => {
            let answer = client.get(&format!("{}/groups", stream_path(&stream)?), &[])?;
            if http.json {
                println!("{answer}");
            } else {
                print_groups(answer["groups"].as_array().map_or(&[][..], Vec::as_slice))?;
            }
        }
        GroupsCommand::Info { stream, group } => {
            let answer = client.get(&group_path(&stream, &group)?, &[])?;
            if http.json {
                println!("{answer}");
            } else {
                print_group(&answer)?;
            }
        }
        GroupsCommand::Create(c) => {
            let mut body = json!({"name": c.group, "start": c.start});
            if let Some(n) = c.max_deliver {
                body["max_deliver"] = n.into();
            }
            if let Some(d) = c.ack_wait {
                body["ack_wait_ms"] = (d.0.as_millis() as u64).into();
            }
            if let Some(n) = c.max_pending {
                body["max_pending_per_consumer"] = n.into();
            }
            if c.drop_exhausted {
                body["on_exhausted"] = "drop".into();
            }
            let answer = client.post_json(&format!("{}/groups", stream_path(&c.stream)?), &body)?;
            if http.json {
                println!("{answer}");
            } else {
                println!("created group {} on {}", c.group, c.stream);
                print_group(&answer)?;
            }
        }
        GroupsCommand::Delete { stream, group } => {
            let answer = client.delete(&group_path(&stream, &group)?)?;
            if http.json {
                println!("{answer}");
            } else {
                println!("deleted group {group} of {stream}");
            }
        }
        GroupsCommand::Pending {
            stream,
            group,
            consumer,
            count,
        } => {
            let mut query = vec![("limit", count.to_string())];
            if let Some(c) = consumer {
                query.push(("consumer", c));
            }
            let path = format!("{}/pending", group_path(&stream, &group)?);
            let answer = client.get(&path, &query)?;
            if http.json {
                println!("{answer}");
            } else {
                print_pending(answer["pending"].as_array().map_or(&[][..], Vec::as_slice))?;
            }
        }
        GroupsCommand::Pause(p) => pause(&client, http.json, p, true)?,
        GroupsCommand::Resume(p) => pause(&client, http.json, p, false)?,
        GroupsCommand::Consume(c) => return consume(http, c),
    }
    Ok(ExitCode::SUCCESS)
}

/// The API path of a group.
pub fn group_path(stream: &str, group: &str) -> anyhow::Result<String> {
    if group.is_empty() || group.contains('/') {
        bail!("`{group}` is not a group name (letters, digits and _ - . : only)");
    }
    Ok(format!("{}/groups/{group}", stream_path(stream)?))
}

fn pause(client: &Client, as_json: bool, p: PauseArgs, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let answer = match (p.all, p.stream, p.group) {
        (true, _, _) => client.post_json(&format!("/api/consumers/{verb}"), &json!({}))?,
        (false, Some(stream), Some(group)) => {
            let path = format!("{}/{verb}", group_path(&stream, &group)?);
            client.post_json(&path, &json!({}))?
        }
        _ => bail!("name a group (`busbar groups {verb} <stream> <group>`) or pass --all"),
    };
    if as_json {
        println!("{answer}");
    } else {
        let what = match (answer["stream"].as_str(), answer["group"].as_str()) {
            (Some(s), Some(g)) => format!("group {g} of {s}"),
            _ => match answer["tenant"].as_str() {
                Some(t) => format!("all group delivery of tenant {t}"),
                None => "all group delivery".to_owned(),
            },
        };
        println!("{what}: {}", if paused { "paused" } else { "resumed" });
    }
    Ok(())
}

fn consume(http: &HttpArgs, c: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(http, c.block.0 + Duration::from_secs(30));
    let path = group_path(&c.stream, &c.group)?;
    let body = json!({
        "consumer": c.consumer,
        "count": c.count,
        "block_ms": c.block.0.as_millis() as u64,
    });
    let mut printed_header = false;
    loop {
        let answer = client.post_json_text(&format!("{path}/read"), &body)?;
        let page = Page::new(&answer, "deliveries", IdAt::Event)?;
        let deliveries: Vec<&Value> = page.items.iter().map(|i| &i.value).collect();
        let mut out = std::io::stdout().lock();
        if http.json {
            for d in &page.items {
                writeln!(out, "{}", d.text)?;
            }
        } else if !deliveries.is_empty() {
            let mut rows = Vec::new();
            if !printed_header {
                rows.push(
                    ["ID", "TYPE", "DELIVERY", "RECEIVED", "DATA"]
                        .map(str::to_owned)
                        .to_vec(),
                );
                printed_header = true;
            }
            for d in &deliveries {
                let e = &d["event"];
                rows.push(vec![
                    text(&e["id"]),
                    text(&e["type"]),
                    text(&d["delivery_count"]),
                    e["received_at"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), format_ms),
                    shorten(&e["data"].to_string(), 80),
                ]);
            }
            write_rows(&mut out, &rows)?;
        } else if !c.follow && page.is_empty() {
            writeln!(out, "(nothing to deliver)")?;
        }
        out.flush()?;
        drop(out);
        // Only what was printed is acknowledged: an event that could not be
        // decoded stays pending, comes back after the group's ack_wait and
        // is dead-lettered after max_deliver attempts.
        if c.ack && !deliveries.is_empty() {
            let ids: Vec<&Value> = deliveries.iter().map(|d| &d["event"]["id"]).collect();
            let acked = client
                .post_json(
                    &format!("{path}/ack"),
                    &json!({"consumer": c.consumer, "ids": ids}),
                )
                .context("printed events could not be acknowledged; they stay pending")?;
            if !http.json {
                let n = acked["acked"].as_array().map_or(0, Vec::len);
                eprintln!("acknowledged {n}");
            }
        }
        if !page.failed.is_empty() {
            let code = report("delivered event", &page.failed);
            eprintln!("busbar: it stays pending (not acknowledged)");
            return Ok(code);
        }
        if !c.follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// `text` cut to `limit` characters.
pub fn shorten(text: &str, limit: usize) -> String {
    if text.chars().count() > limit {
        format!("{}…", text.chars().take(limit - 1).collect::<String>())
    } else {
        text.to_owned()
    }
}

fn print_groups(groups: &[Value]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if groups.is_empty() {
        return writeln!(out, "(no groups)");
    }
    let mut rows = vec![[
        "GROUP",
        "CONSUMERS",
        "PENDING",
        "LAG",
        "LAST DELIVERED",
        "LAST ACK",
        "PAUSED",
    ]
    .map(str::to_owned)
    .to_vec()];
    for g in groups {
        rows.push(vec![
            text(&g["name"]),
            g["consumers"].as_array().map_or(0, Vec::len).to_string(),
            text(&g["pending"]),
            text(&g["lag"]),
            text(&g["last_delivered_id"]),
            g["last_ack_ms"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), format_ms),
            text(&g["paused"]),
        ]);
    }
    write_rows(&mut out, &rows)
}

fn print_group(g: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let config = &g["config"];
    writeln!(
        out,
        "group           {} on {}",
        text(&g["name"]),
        text(&g["stream"])
    )?;
    writeln!(out, "pending         {}", text(&g["pending"]))?;
    writeln!(out, "lag             {}", text(&g["lag"]))?;
    writeln!(out, "last delivered  {}", text(&g["last_delivered_id"]))?;
    writeln!(
        out,
        "last ack        {}",
        g["last_ack_ms"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), format_ms)
    )?;
    writeln!(out, "paused          {}", text(&g["paused"]))?;
    writeln!(
        out,
        "policy          max_deliver {}, ack_wait {} ms, max_pending_per_consumer {}, on_exhausted {}",
        text(&config["max_deliver"]),
        text(&config["ack_wait"]),
        text(&config["max_pending_per_consumer"]),
        text(&config["on_exhausted"])
    )?;
    let consumers = g["consumers"].as_array().map_or(&[][..], Vec::as_slice);
    if consumers.is_empty() {
        return writeln!(out, "consumers       (none yet)");
    }
    writeln!(out)?;
    let mut rows = vec![["CONSUMER", "PENDING", "IDLE"].map(str::to_owned).to_vec()];
    for c in consumers {
        rows.push(vec![
            text(&c["name"]),
            text(&c["pending"]),
            c["idle_ms"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        ]);
    }
    write_rows(&mut out, &rows)
}

fn print_pending(pending: &[Value]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if pending.is_empty() {
        return writeln!(out, "(nothing pending)");
    }
    let mut rows = vec![["ID", "CONSUMER", "DELIVERIES", "IDLE", "LAST ERROR"]
        .map(str::to_owned)
        .to_vec()];
    for p in pending {
        rows.push(vec![
            text(&p["id"]),
            text(&p["consumer"]),
            text(&p["delivery_count"]),
            p["idle_ms"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            shorten(&text(&p["last_error"]), 60),
        ]);
    }
    write_rows(&mut out, &rows)
}
