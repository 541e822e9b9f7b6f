//! Named corruption tests: each damages the files of a closed store in one
//! way and asserts exactly what survives the next open.

use std::path::{Path, PathBuf};

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{CorruptionPolicy, EmbeddedConfig, EmbeddedStore};
use busbar_store::{AppendOptions, ReadQuery, Store, StoreError};

const HEADER_LEN: usize = 64;

fn stream() -> StreamName {
    StreamName::new("s").unwrap()
}

fn config(dir: &Path) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.segment_bytes = 2048;
    c.index_interval_bytes = 256;
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `n` single-event batches and closes; returns the ids.
fn populate(dir: &Path, n: usize) -> Vec<EventId> {
    rt().block_on(async {
        let store = EmbeddedStore::open(config(dir)).unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let mut b = EventBatch::new();
            let payload = format!(r#"{{"i":{i}}}"#);
            b.push(&NewEvent::new("t", payload.as_bytes())).unwrap();
            ids.extend(
                store
                    .append(&stream(), b, AppendOptions::default())
                    .await
                    .unwrap(),
            );
        }
        store.close().await.unwrap();
        ids
    })
}

fn read_all(store: &EmbeddedStore) -> Result<Vec<EventId>, StoreError> {
    rt().block_on(async {
        Ok(store
            .read(&stream(), &ReadQuery::all(usize::MAX))
            .await?
            .iter()
            .map(|e| e.id())
            .collect())
    })
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("streams/s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Frame start offsets of a segment file.
fn frame_offsets(path: &Path) -> Vec<usize> {
    let data = std::fs::read(path).unwrap();
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while at < data.len() {
        out.push(at);
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

#[test]
fn truncating_the_active_segment_at_every_offset_keeps_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 8);
    let active = segments(dir.path()).pop().unwrap();
    let original = std::fs::read(&active).unwrap();
    let offsets = frame_offsets(&active);
    let records_in_active = offsets.len();
    let earlier = ids.len() - records_in_active;
    // Every byte offset from the start of the third-last record to the end.
    let from = offsets[records_in_active.saturating_sub(3)];
    for cut in from..original.len() {
        std::fs::write(&active, &original[..cut]).unwrap();
        let store = EmbeddedStore::open(config(dir.path()))
            .unwrap_or_else(|e| panic!("open after cut at {cut}: {e}"));
        let whole = offsets.iter().filter(|&&o| {
            let len = u32::from_le_bytes(original[o..o + 4].try_into().unwrap()) as usize;
            o + 8 + len <= cut
        });
        let kept = earlier + whole.count();
        assert_eq!(read_all(&store).unwrap(), ids[..kept], "cut at {cut}");
        drop(store);
        let last_whole = offsets
            .iter()
            .map(|&o| o + 8 + u32::from_le_bytes(original[o..o + 4].try_into().unwrap()) as usize)
            .filter(|&end| end <= cut)
            .max()
            .unwrap_or(HEADER_LEN);
        assert_eq!(
            std::fs::metadata(&active).unwrap().len() as usize,
            last_whole,
            "torn tail not truncated at {cut}"
        );
    }
    // After the worst cut, appends continue with greater ids.
    std::fs::write(&active, &original[..from + 3]).unwrap();
    rt().block_on(async {
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        let mut b = EventBatch::new();
        b.push(&NewEvent::new("t", b"{}")).unwrap();
        let next = store
            .append(&stream(), b, AppendOptions::default())
            .await
            .unwrap();
        assert!(next[0] > ids[earlier + records_in_active - 3]);
    });
}

#[test]
fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 5);
    let active = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    f.set_len(len + 4096).unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
}

#[test]
fn bit_flip_mid_log_fails_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 6);
    let active = segments(dir.path()).pop().unwrap();
    let offsets = frame_offsets(&active);
    assert!(offsets.len() >= 3, "need records after the damage");
    let mut data = std::fs::read(&active).unwrap();
    data[offsets[1] + 8 + 20] ^= 0x10;
    std::fs::write(&active, &data).unwrap();
    match EmbeddedStore::open(config(dir.path())) {
        Err(StoreError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, active);
            assert_eq!(offset, offsets[1] as u64);
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
    // The damaged file is left exactly as it was: nothing was truncated.
    assert_eq!(std::fs::read(&active).unwrap(), data);
}

#[test]
fn bit_flip_in_a_sealed_segment_with_quarantine_sets_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 120);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    let victim = &segs[1];
    let victim_ids = frame_offsets(victim).len();
    let before = frame_offsets(&segs[0]).len();
    let mut data = std::fs::read(victim).unwrap();
    let off = frame_offsets(victim)[2];
    data[off + 8 + 30] ^= 0x01;
    std::fs::write(victim, &data).unwrap();

    // With its index in place the damage is found on read, by checksum.
    {
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        match read_all(&store) {
            Err(StoreError::Corrupt { path, offset, .. }) => {
                assert_eq!(&path, victim);
                assert_eq!(offset, off as u64);
            }
            other => panic!("expected corruption on read, got {other:?}"),
        }
    }
    // Without it, open scans the segment: fail by default...
    std::fs::remove_file(victim.with_extension("idx")).unwrap();
    assert!(matches!(
        EmbeddedStore::open(config(dir.path())),
        Err(StoreError::Corrupt { .. })
    ));
    // ...or quarantine it and keep everything else.
    let mut c = config(dir.path());
    c.on_corruption = CorruptionPolicy::Quarantine;
    let store = EmbeddedStore::open(c).unwrap();
    let mut want = ids.clone();
    want.drain(before..before + victim_ids);
    assert_eq!(read_all(&store).unwrap(), want);
    let name = victim.file_name().unwrap();
    assert!(dir.path().join("quarantine/s").join(name).exists());
}

#[test]
fn deleted_index_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 60);
    let segs = segments(dir.path());
    let idx = segs[0].with_extension("idx");
    let original = std::fs::read(&idx).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
    assert_eq!(std::fs::read(&idx).unwrap(), original);
}

#[test]
fn stale_index_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 120);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "want two sealed segments");
    // An index describing a different segment (wrong length) is stale.
    std::fs::copy(segs[1].with_extension("idx"), segs[0].with_extension("idx")).unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
    // A damaged index is stale too.
    drop(store);
    let idx = segs[0].with_extension("idx");
    let mut data = std::fs::read(&idx).unwrap();
    data[12] ^= 0xff;
    std::fs::write(&idx, data).unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
}

#[test]
fn segment_torn_at_creation_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 10);
    let last = segments(dir.path()).pop().unwrap();
    let no: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let torn = last.with_file_name(format!("{:020}.seg", no + 1));
    std::fs::write(&torn, b"BUSBSEG").unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
    assert!(!torn.exists());
}

#[test]
fn damaged_header_of_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 60);
    let first = segments(dir.path()).remove(0);
    let mut data = std::fs::read(&first).unwrap();
    data[20] ^= 0x01;
    std::fs::write(&first, data).unwrap();
    match EmbeddedStore::open(config(dir.path())) {
        Err(StoreError::Corrupt {
            path, offset: 0, ..
        }) => assert_eq!(path, first),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn second_opener_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(config(dir.path())).unwrap();
    assert!(matches!(
        EmbeddedStore::open(config(dir.path())),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn checksummed_event_record_whose_lengths_do_not_add_up_fails_open() {
    // The frame's checksum holds, but the record's type length runs past
    // it: opening used to succeed and every read of the stream then
    // failed. It is damage like any other, found on open.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 4);
    let active = segments(dir.path()).pop().unwrap();
    let offsets = frame_offsets(&active);
    let mut data = std::fs::read(&active).unwrap();
    let at = offsets[1];
    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let body = at + 8;
    data[body + 2..body + 4].copy_from_slice(&u16::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&data[body..body + len]);
    data[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&active, &data).unwrap();
    match EmbeddedStore::open(config(dir.path())) {
        Err(StoreError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, active);
            assert_eq!(offset, at as u64);
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
}

#[test]
fn checksummed_event_record_with_an_id_out_of_order_fails_open() {
    // A record whose checksum holds but whose id is not above the one
    // before it: opening used to serve the stream with ids going back.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 4);
    let active = segments(dir.path()).pop().unwrap();
    let offsets = frame_offsets(&active);
    let mut data = std::fs::read(&active).unwrap();
    let first_id = offsets[0] + 8 + 16;
    let id: Vec<u8> = data[first_id..first_id + 16].to_vec();
    let at = offsets[1];
    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let body = at + 8;
    data[body + 16..body + 32].copy_from_slice(&id);
    let crc = crc32c::crc32c(&data[body..body + len]);
    data[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&active, &data).unwrap();
    match EmbeddedStore::open(config(dir.path())) {
        Err(StoreError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, active);
            assert_eq!(offset, at as u64);
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
}

#[test]
fn events_appended_after_a_damaged_floor_past_the_last_id_survive_a_reopen() {
    // A header whose checksum holds but whose trim floor is past every id
    // (trims stop at the last id, so only damage holds one): events
    // appended after opening got ids below the floor, were read, and were
    // hidden by it from the next open on.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 2);
    let active = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&active).unwrap();
    let far = busbar_event::now_ms() + 365 * 86_400_000;
    data[32..40].copy_from_slice(&far.to_le_bytes());
    let crc = crc32c::crc32c(&data[..HEADER_LEN - 4]);
    data[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&active, &data).unwrap();

    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    let appended = rt().block_on(async {
        let mut b = EventBatch::new();
        b.push(&NewEvent::new("t", b"{}")).unwrap();
        let ids = store
            .append(&stream(), b, AppendOptions::default())
            .await
            .unwrap();
        store.close().await.unwrap();
        ids
    });
    drop(store);
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), appended);
}

#[test]
fn index_file_with_counts_past_its_length_is_stale() {
    // An index whose checksum holds but whose entry or control count is
    // more than the file holds: opening panicked (a capacity overflow, or
    // a read past the end) instead of rebuilding the index.
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 60);
    let idx = segments(dir.path())[0].with_extension("idx");
    let original = std::fs::read(&idx).unwrap();
    let entries = u64::from_le_bytes(original[64..72].try_into().unwrap()) as usize;
    let controls_at = 72 + entries * 32;
    // Then an event count more than the segment can hold, which was
    // taken as the stream's length.
    let cases = [
        (64, u64::MAX),
        (64, 1 << 40),
        (controls_at, u64::MAX),
        (16, 1 << 62),
    ];
    for (at, count) in cases {
        let mut data = original.clone();
        data[at..at + 8].copy_from_slice(&count.to_le_bytes());
        let end = data.len() - 4;
        let crc = crc32c::crc32c(&data[..end]);
        data[end..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&idx, &data).unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        assert_eq!(read_all(&store).unwrap(), ids, "count {count} at {at}");
        let info = rt().block_on(store.info(&stream())).unwrap();
        assert_eq!(info.length, ids.len() as u64, "count {count} at {at}");
        drop(store);
        assert_eq!(std::fs::read(&idx).unwrap(), original, "rebuilt");
    }
}

#[test]
fn deletion_record_naming_an_event_the_stream_does_not_hold_keeps_the_length_right() {
    // A deletion record whose checksum holds but which names an id the
    // stream never held: the stream's length counted it as deleted, one
    // short of what a read returns.
    let dir = tempfile::tempdir().unwrap();
    let ids = populate(dir.path(), 3);
    let active = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&active).unwrap();
    let absent = EventId::new(ids[2].ms + 1000, 7);
    let mut body = vec![3u8, 0, 0, 0];
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&absent.ms.to_le_bytes());
    body.extend_from_slice(&absent.seq.to_le_bytes());
    data.extend_from_slice(&(body.len() as u32).to_le_bytes());
    data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    data.extend_from_slice(&body);
    std::fs::write(&active, &data).unwrap();

    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store).unwrap(), ids);
    let info = rt().block_on(store.info(&stream())).unwrap();
    assert_eq!(info.length, 3);
}
