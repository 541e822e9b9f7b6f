//! Byte layouts of segment files and index files (see the module docs of
//! [`super`] for the picture), and the frame scanner used by recovery and
//! reads.

use busbar_event::{EventId, FRAME_HEADER_LEN};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"BUSBSEG1";
/// First bytes of every index file.
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"BUSBIDX1";
/// Length of a segment header.
pub(crate) const HEADER_LEN: u64 = 64;
/// Format version written in headers.
pub(crate) const VERSION: u32 = 1;
/// Frames whose length field exceeds this are damage, not data.
pub(crate) const MAX_BODY_LEN: usize = 256 * 1024 * 1024;

pub(crate) const KIND_EVENT: u8 = 1;
pub(crate) const KIND_TRIM: u8 = 2;
pub(crate) const KIND_DELETE: u8 = 3;
pub(crate) const KIND_GROUP_OP: u8 = 4;
pub(crate) const KIND_GROUP_SNAPSHOT: u8 = 5;

/// Header flag: the segment's first record is a snapshot of the stream's
/// consumer groups.
pub(crate) const FLAG_GROUP_SNAPSHOT: u32 = 1;

/// Whether a record body is an event (every other kind is a control).
pub(crate) fn is_event(body: &[u8]) -> bool {
    body.first() == Some(&KIND_EVENT)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn id_at(b: &[u8], at: usize) -> EventId {
    EventId::new(u64_at(b, at), u64_at(b, at + 8))
}

fn put_id(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

/// The header every segment starts with: enough to keep ids increasing and
/// trims in force even when every older segment has been dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SegmentHeader {
    /// The stream's last id when the segment was created.
    pub prev_last_id: EventId,
    /// The stream's trim floor when the segment was created.
    pub floor: EventId,
    /// [`FLAG_GROUP_SNAPSHOT`] and future flags.
    pub flags: u32,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut v = Vec::with_capacity(HEADER_LEN as usize);
        v.extend_from_slice(SEGMENT_MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        put_id(&mut v, self.prev_last_id);
        put_id(&mut v, self.floor);
        v.resize(HEADER_LEN as usize - 4, 0);
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        let mut out = [0u8; HEADER_LEN as usize];
        out.copy_from_slice(&v);
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < HEADER_LEN as usize {
            return Err("segment header is truncated");
        }
        if &b[..8] != SEGMENT_MAGIC {
            return Err("segment header has the wrong magic");
        }
        let end = HEADER_LEN as usize - 4;
        if crc32c::crc32c(&b[..end]) != u32_at(b, end) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(b, 8) != VERSION {
            return Err("unsupported segment format version");
        }
        Ok(SegmentHeader {
            prev_last_id: id_at(b, 16),
            floor: id_at(b, 32),
            flags: u32_at(b, 12),
        })
    }
}

/// A control record: trims and deletions are logged in the stream's active
/// segment like events, so they are ordered and group-committed with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Events below this id are trimmed.
    Trim(EventId),
    /// These events are deleted.
    Delete(Vec<EventId>),
    /// A consumer-group op (`group::encode_op` bytes).
    GroupOp(Vec<u8>),
    /// Every consumer group of the stream, as JSON.
    GroupSnapshot(Vec<u8>),
}

impl Control {
    /// The framed record (`len | crc | body`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Control::Trim(id) => {
                body.extend_from_slice(&[KIND_TRIM, 0, 0, 0, 0, 0, 0, 0]);
                put_id(&mut body, *id);
            }
            Control::Delete(ids) => {
                body.extend_from_slice(&[KIND_DELETE, 0, 0, 0]);
                body.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    put_id(&mut body, *id);
                }
            }
            Control::GroupOp(bytes) => {
                body.push(KIND_GROUP_OP);
                body.extend_from_slice(bytes);
            }
            Control::GroupSnapshot(bytes) => {
                body.push(KIND_GROUP_SNAPSHOT);
                body.extend_from_slice(bytes);
            }
        }
        let mut framed = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
        framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    /// Decodes a control body; `None` for event records.
    pub(crate) fn decode(body: &[u8]) -> Result<Option<Control>, &'static str> {
        match body.first() {
            Some(&KIND_EVENT) => Ok(None),
            Some(&KIND_TRIM) if body.len() == 24 => Ok(Some(Control::Trim(id_at(body, 8)))),
            Some(&KIND_DELETE) if body.len() >= 8 => {
                let n = u32_at(body, 4) as usize;
                if body.len() != 8 + 16 * n {
                    return Err("delete record length does not match its count");
                }
                Ok(Some(Control::Delete(
                    (0..n).map(|i| id_at(body, 8 + 16 * i)).collect(),
                )))
            }
            Some(&KIND_GROUP_OP) => Ok(Some(Control::GroupOp(body[1..].to_vec()))),
            Some(&KIND_GROUP_SNAPSHOT) => Ok(Some(Control::GroupSnapshot(body[1..].to_vec()))),
            _ => Err("unknown record kind"),
        }
    }
}

/// The id of an event record body (callers check the kind first).
pub(crate) fn event_id(body: &[u8]) -> EventId {
    id_at(body, 16)
}

/// Why a scan stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadFrame {
    /// File offset of the frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: &'static str,
    /// Whether the damage looks like an interrupted append: the frame runs
    /// past the end of the file, or nothing but zeros follows it.
    pub torn: bool,
}

/// Walks the frames of `data`, which starts at file offset `base`. Calls
/// `each(offset, body)` for every frame whose checksum holds and stops at the
/// first one that does not.
pub(crate) fn scan_frames(
    data: &[u8],
    base: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), &'static str>,
) -> Result<(), BadFrame> {
    let mut at = 0usize;
    while at < data.len() {
        let offset = base + at as u64;
        let rest = &data[at..];
        let all_zero_after = |from: usize| data[from.min(data.len())..].iter().all(|&b| b == 0);
        if rest.len() < FRAME_HEADER_LEN {
            return Err(BadFrame {
                offset,
                reason: "frame header runs past the end of the file",
                torn: true,
            });
        }
        let len = u32_at(rest, 0) as usize;
        let crc = u32_at(rest, 4);
        if len == 0 || len > MAX_BODY_LEN {
            return Err(BadFrame {
                offset,
                reason: if len == 0 {
                    "zero-length frame"
                } else {
                    "frame length is implausible"
                },
                torn: all_zero_after(at),
            });
        }
        let end = at + FRAME_HEADER_LEN + len;
        if end > data.len() {
            return Err(BadFrame {
                offset,
                reason: "frame runs past the end of the file",
                torn: true,
            });
        }
        let body = &data[at + FRAME_HEADER_LEN..end];
        if crc32c::crc32c(body) != crc {
            return Err(BadFrame {
                offset,
                reason: "frame checksum mismatch",
                torn: all_zero_after(end),
            });
        }
        if let Err(reason) = each(offset, body) {
            return Err(BadFrame {
                offset,
                reason,
                torn: false,
            });
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            prev_last_id: EventId::new(5, 6),
            floor: EventId::new(1, 2),
            flags: FLAG_GROUP_SNAPSHOT,
        };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        bytes[20] ^= 1;
        assert!(SegmentHeader::decode(&bytes).is_err());
    }

    #[test]
    fn control_records_round_trip() {
        for c in [
            Control::Trim(EventId::new(3, 4)),
            Control::Delete(vec![EventId::new(1, 1), EventId::new(2, 0)]),
            Control::Delete(vec![]),
            Control::GroupOp(vec![1, 2, 3]),
            Control::GroupSnapshot(b"{}".to_vec()),
        ] {
            let framed = c.encode();
            assert_eq!(Control::decode(&framed[8..]), Ok(Some(c)));
        }
    }

    #[test]
    fn scan_tells_torn_tails_from_damage() {
        let a = Control::Trim(EventId::new(1, 0)).encode();
        let mut data = [a.clone(), a.clone()].concat();
        let mut seen = 0;
        assert!(scan_frames(&data, 0, |_, _| {
            seen += 1;
            Ok(())
        })
        .is_ok());
        assert_eq!(seen, 2);
        // Cut inside the second frame: torn.
        let cut = &data[..a.len() + 5];
        let err = scan_frames(cut, 0, |_, _| Ok(())).unwrap_err();
        assert!(err.torn && err.offset == a.len() as u64);
        // Flip a bit in the first frame's body: damage followed by data.
        data[10] ^= 0x40;
        let err = scan_frames(&data, 0, |_, _| Ok(())).unwrap_err();
        assert!(!err.torn && err.offset == 0);
    }
}
