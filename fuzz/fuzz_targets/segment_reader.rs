//! The embedded store's recovery and segment reader, on segment (and index)
//! files made of any bytes, on the in-memory `SimFs`.
//!
//! The first input byte says how the rest is laid out:
//! - bit 0: fix each segment's header checksum, bit 1: fix each frame's
//!   checksum (so the fuzzer gets past them to the records);
//! - bit 2: quarantine damaged segments instead of failing the open;
//! - bit 3: two segments, a sealed one then the active one: a `u16` length
//!   of the first follows, then its bytes, then (bit 4) a `u16` length and
//!   the bytes of its index file, whose length field and checksum are fixed
//!   up; the rest is the active segment. Without bit 3 the rest is the
//!   one, active, segment.
//!
//! Invariants: opening returns a store or an error, never panics, hangs or
//! allocates without bound; an opened store's ids strictly increase, its
//! streams read and their info agrees with what they read (unless an
//! index file was given), its reverse read is its forward read reversed,
//! an append gets an id above every earlier one, and a reopened store
//! reads back what the first open read plus that append.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{CorruptionPolicy, EmbeddedConfig, EmbeddedStore};
use busbar_store::fs::{Fs, SimFs};
use busbar_store::{AppendOptions, ReadQuery, Store};
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 64;
const FRAME_HEADER_LEN: usize = 8;

/// The data directory. Only its `LOCK` file is on the real file system
/// (the store takes an OS lock there); everything else is on a `SimFs`.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("busbar-fuzz-segments-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, rest) = data.split_at(n);
    *data = rest;
    head
}

fn take_len(data: &mut &[u8]) -> usize {
    let b = take(data, 2);
    match b {
        [lo, hi] => u16::from_le_bytes([*lo, *hi]) as usize,
        _ => 0,
    }
}

fn fix_segment(seg: &mut [u8], header: bool, frames: bool) {
    if header && seg.len() >= HEADER_LEN {
        let crc = crc32c::crc32c(&seg[..HEADER_LEN - 4]);
        seg[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    if frames {
        let mut at = HEADER_LEN;
        while at + FRAME_HEADER_LEN <= seg.len() {
            let len = u32::from_le_bytes(seg[at..at + 4].try_into().unwrap()) as usize;
            let body = at + FRAME_HEADER_LEN;
            let Some(end) = body.checked_add(len).filter(|&end| end <= seg.len()) else {
                break;
            };
            let crc = crc32c::crc32c(&seg[body..end]);
            seg[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
    }
}

fn fix_index(idx: &mut [u8], segment_len: usize) {
    if idx.len() >= 84 {
        idx[8..16].copy_from_slice(&(segment_len as u64).to_le_bytes());
        let end = idx.len() - 4;
        let crc = crc32c::crc32c(&idx[..end]);
        idx[end..].copy_from_slice(&crc.to_le_bytes());
    }
}

fn config(fs: &SimFs, quarantine: bool) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(data_dir());
    c.segment_bytes = 4096;
    c.index_interval_bytes = 256;
    c.queue_depth = 16;
    c.on_corruption = if quarantine {
        CorruptionPolicy::Quarantine
    } else {
        CorruptionPolicy::Fail
    };
    c.fs = Arc::new(fs.clone());
    c
}

/// Every stream's events (id and record bytes), checking what each open
/// store must hold to. Reads must succeed, and agree with the stream's
/// info, unless an index file was given: an index whose checksum holds is
/// trusted as the store's own cache (only what no segment of its length
/// can hold makes it stale), so damage behind one shows only when that
/// part is read.
async fn view(store: &EmbeddedStore, strict: bool) -> View {
    let mut out = Vec::new();
    let Ok(streams) = store.streams().await else {
        return out;
    };
    for stream in streams {
        let events = match store.read(&stream, &ReadQuery::all(usize::MAX)).await {
            Ok(events) => events,
            Err(e) if strict => panic!("an opened store cannot read `{stream}`: {e}"),
            Err(_) => {
                out.push((stream, None));
                continue;
            }
        };
        for pair in events.windows(2) {
            assert!(pair[0].id() < pair[1].id(), "ids do not strictly increase");
        }
        let mut reverse = ReadQuery::all(usize::MAX);
        reverse.reverse = true;
        if let Ok(mut backwards) = store.read(&stream, &reverse).await {
            backwards.reverse();
            assert!(
                backwards == events,
                "a reverse read is not the forward read reversed"
            );
        }
        // Counts come from a given index file as they are (see above).
        if let Some(info) = store.info(&stream).await.ok().filter(|_| strict) {
            assert_eq!(info.length, events.len() as u64, "info.length");
            assert_eq!(
                info.first_id,
                events.first().map(|e| e.id()),
                "info.first_id"
            );
            if let Some(last) = events.last() {
                assert!(
                    info.last_id >= last.id(),
                    "info.last_id below the last event"
                );
            }
        }
        let _ = store.groups(&stream).await;
        let events = events.iter().map(|e| (e.id(), e.body().to_vec())).collect();
        out.push((stream, Some(events)));
    }
    out
}

/// Each stream's events (id and record bytes), `None` for a stream that
/// cannot be read.
type View = Vec<(StreamName, Option<Vec<(EventId, Vec<u8>)>>)>;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let (fix_header, fix_frames) = (flags & 1 != 0, flags & 2 != 0);
    let quarantine = flags & 4 != 0;
    let strict = flags & 24 != 24;
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    if flags & 8 != 0 {
        let n = take_len(&mut rest);
        let mut sealed = take(&mut rest, n).to_vec();
        fix_segment(&mut sealed, fix_header, fix_frames);
        if flags & 16 != 0 {
            let n = take_len(&mut rest);
            let mut idx = take(&mut rest, n).to_vec();
            fix_index(&mut idx, sealed.len());
            files.push(("00000000000000000001.idx", idx));
        }
        files.push(("00000000000000000001.seg", sealed));
        let mut active = rest.to_vec();
        fix_segment(&mut active, fix_header, fix_frames);
        files.push(("00000000000000000002.seg", active));
    } else {
        let mut active = rest.to_vec();
        fix_segment(&mut active, fix_header, fix_frames);
        files.push(("00000000000000000001.seg", active));
    }

    let fs = SimFs::new();
    let stream_dir = data_dir().join("streams").join("s");
    fs.create_dir_all(&stream_dir).unwrap();
    for (name, bytes) in &files {
        let f = fs.create_new(&stream_dir.join(name)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_data().unwrap();
    }

    let Ok(store) = EmbeddedStore::open(config(&fs, quarantine)) else {
        return;
    };
    let rt = runtime();
    let stream = StreamName::new("s").unwrap();
    let (mut before, appended) = rt.block_on(async {
        let before = view(&store, strict).await;
        let last = store.info(&stream).await.map(|i| i.last_id).ok();
        let mut batch = EventBatch::new();
        batch.push(&NewEvent::new("fuzz", br#"{"n":1}"#)).unwrap();
        let appended = match store.append(&stream, batch, AppendOptions::default()).await {
            Ok(ids) => {
                assert_eq!(ids.len(), 1);
                if let Some(last) = last {
                    assert!(ids[0] > last, "an append's id is not above the last id");
                }
                Some(ids[0])
            }
            Err(_) => None,
        };
        let _ = store.close().await;
        (before, appended)
    });
    drop(store);

    let again = EmbeddedStore::open(config(&fs, quarantine)).expect("a store that opened reopens");
    let after = rt.block_on(async {
        let after = view(&again, strict).await;
        let _ = again.close().await;
        after
    });
    if let Some(id) = appended {
        match before.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, Some(events))) => events.push((id, Vec::new())),
            Some((_, None)) => {}
            None => before.push((stream.clone(), Some(vec![(id, Vec::new())]))),
        }
    }
    // A stream one of the opens could not read is not compared (only
    // without `strict`); the appended event's bytes are the store's, so
    // its id alone is.
    let unreadable: Vec<StreamName> = before
        .iter()
        .chain(after.iter())
        .filter(|(_, events)| events.is_none())
        .map(|(s, _)| s.clone())
        .collect();
    let comparable = |v: View| {
        let mut v: Vec<(StreamName, Vec<(EventId, Vec<u8>)>)> = v
            .into_iter()
            .filter(|(s, _)| !unreadable.contains(s))
            .map(|(s, events)| {
                let mut events = events.unwrap_or_default();
                if let Some(last) = events.last_mut() {
                    if Some(last.0) == appended {
                        last.1.clear();
                    }
                }
                (s, events)
            })
            .collect();
        v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        v
    };
    let (before, after) = (comparable(before), comparable(after));
    if before != after {
        let ids = |v: &[(StreamName, Vec<(EventId, Vec<u8>)>)]| {
            v.iter()
                .map(|(s, e)| {
                    (
                        s.to_string(),
                        e.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        panic!(
            "the reopened store reads back something else:\n before {:?}\n after  {:?}",
            ids(&before),
            ids(&after)
        );
    }
});
