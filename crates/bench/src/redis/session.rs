//! Redis' persistence, set for each run to match busbar's durability and
//! put back afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Control;
use crate::BenchError;

/// How long a run waits for the AOF rewrite that `appendonly yes` starts.
const AOF_TIMEOUT: Duration = Duration::from_secs(60);

/// Redis' persistence settings a run changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Persistence {
    appendonly: String,
    appendfsync: String,
    save: String,
}

/// Redis set up for the bench: persistence as each run asks, and on
/// [`Session::restore`] (or drop, after an error or an interruption) the
/// operator's settings back and the bench's keys deleted.
pub(crate) struct Session {
    addr: SocketAddr,
    saved: Persistence,
    keys: Vec<String>,
    restored: bool,
}

impl Session {
    /// Reads the current settings and turns RDB snapshots off.
    pub(crate) fn begin(addr: SocketAddr) -> Result<Session, BenchError> {
        let mut c = Control::connect(addr)?;
        let saved = Persistence {
            appendonly: c.config_get("appendonly")?,
            appendfsync: c.config_get("appendfsync")?,
            save: c.config_get("save")?,
        };
        let session = Session {
            addr,
            saved,
            keys: Vec::new(),
            restored: false,
        };
        c.command(&["CONFIG", "SET", "save", ""])?;
        Ok(session)
    }

    /// What Redis had before, for the report.
    pub(crate) fn original(&self) -> String {
        format!(
            "appendonly {}, appendfsync {}, save {:?}",
            self.saved.appendonly, self.saved.appendfsync, self.saved.save
        )
    }

    /// Sets persistence (`appendfsync` `None`: AOF off), waits for the AOF
    /// rewrite that turning it on starts, and empties `key`, which
    /// [`Session::restore`] deletes.
    pub(crate) fn prepare(
        &mut self,
        appendfsync: Option<&str>,
        key: &str,
    ) -> Result<(), BenchError> {
        let mut c = Control::connect(self.addr)?;
        if !self.keys.iter().any(|k| k == key) {
            self.keys.push(key.to_owned());
        }
        c.command(&["DEL", key])?;
        match appendfsync {
            Some(policy) => {
                c.command(&["CONFIG", "SET", "appendfsync", policy])?;
                c.command(&["CONFIG", "SET", "appendonly", "yes"])?;
            }
            None => {
                c.command(&["CONFIG", "SET", "appendonly", "no"])?;
            }
        }
        let deadline = Instant::now() + AOF_TIMEOUT;
        loop {
            let busy = c.info_field("persistence", "aof_rewrite_in_progress")?;
            let scheduled = c.info_field("persistence", "aof_rewrite_scheduled")?;
            if busy.as_deref() != Some("1") && scheduled.as_deref() != Some("1") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::redis(
                    "CONFIG SET appendonly yes",
                    "the AOF rewrite did not finish in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes `key` now (it stays listed for [`Session::restore`]).
    pub(crate) fn delete(&mut self, key: &str) -> Result<(), BenchError> {
        Control::connect(self.addr)?.command(&["DEL", key])?;
        Ok(())
    }

    /// Puts the operator's settings back and deletes the bench's keys.
    pub(crate) fn restore(&mut self) -> Result<(), BenchError> {
        let mut c = Control::connect(self.addr)?;
        for key in &self.keys {
            c.command(&["DEL", key])?;
        }
        c.command(&["CONFIG", "SET", "appendfsync", &self.saved.appendfsync])?;
        c.command(&["CONFIG", "SET", "appendonly", &self.saved.appendonly])?;
        c.command(&["CONFIG", "SET", "save", &self.saved.save])?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.restored {
            if let Err(e) = self.restore() {
                eprintln!(
                    "busbar bench: could not restore Redis' settings ({}): {e}",
                    self.original()
                );
            }
        }
    }
}
