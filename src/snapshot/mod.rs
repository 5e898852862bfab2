//! rkyv snapshots of the store: written in the background and at shutdown, restored at start-up.
//!
//! **Crash safety.** A snapshot is written to `snapshot-<ms>.otss.tmp`, synced, renamed to
//! `snapshot-<ms>.otss` and the directory synced; only then are snapshots beyond `--snapshot-keep`
//! deleted, oldest first. A `kill -9` at any moment leaves the previous complete snapshot.
//!
//! **Restore.** The newest snapshot that validates completely (checksums, rkyv's checked access,
//! column consistency, every series key) is loaded, in two phases: everything is checked before
//! the first series enters the store, so a bad file never leaves half its data behind. Restored
//! samples pass the same time checks as ingested ones: older than the retention window, or
//! further ahead of the clock than `--max-future-skew`, they are dropped (a snapshot written by
//! a server whose clock ran ahead cannot hold a series back); and new series the same limits. A file that
//! fails is renamed to `<name>.rejected` (kept for inspection, never deleted) and the next older
//! one is tried. The writer holds each shard's read lock for at most [`SLOTS_PER_LOCK`] series at
//! a time: appends to that shard wait for one such range (a millisecond or less), queries not at all.

pub mod format;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;

use crate::config::SnapshotConfig;
use crate::outcome::PanicSite;
use crate::store::{RestoreOutcome, SeriesKey, Store};
use crate::telemetry::Telemetry;
use format::{FormatError, Header, ShardSection, TableEntry};

/// Series copied per hold of a shard's read lock while writing.
pub const SLOTS_PER_LOCK: usize = 1024;

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".otss";
const TMP_SUFFIX: &str = ".tmp";
const REJECTED_SUFFIX: &str = ".rejected";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("serializing shard {shard}: {message}")]
    Serialize { shard: usize, message: String },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { action, path: path.to_path_buf(), source }
}

/// A snapshot that was written completely.
#[derive(Debug, Clone)]
pub struct WrittenSnapshot {
    pub path: PathBuf,
    pub bytes: u64,
    pub series: u64,
    pub samples: u64,
    pub duration: Duration,
    /// The longest a shard's read lock was held (appends to that shard waited at most this).
    pub longest_lock_hold: Duration,
}

/// Writes a snapshot of `store` into `dir` (created if missing) and deletes complete snapshots
/// beyond the `keep` newest.
pub fn write_snapshot(
    store: &Store,
    dir: &Path,
    keep: usize,
    now_unix_ms: i64,
) -> Result<WrittenSnapshot, SnapshotError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    // A name per millisecond; a second snapshot within the same millisecond takes the next one.
    let mut created_ms = now_unix_ms;
    let final_path = loop {
        let candidate = dir.join(format!("{FILE_PREFIX}{created_ms:013}{FILE_SUFFIX}"));
        if !candidate.exists() {
            break candidate;
        }
        created_ms += 1;
    };
    let tmp_path = final_path.with_extension(format!("otss{TMP_SUFFIX}"));
    let written = write_file(store, &tmp_path, created_ms).inspect_err(|_| {
        let _ = fs::remove_file(&tmp_path);
    })?;
    fs::rename(&tmp_path, &final_path).map_err(io_error("renaming", &tmp_path))?;
    sync_dir(dir)?;
    prune(dir, keep);
    Ok(WrittenSnapshot { path: final_path, duration: started.elapsed(), ..written })
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(io_error("syncing", dir))
}

fn write_file(store: &Store, path: &Path, created_ms: i64) -> Result<WrittenSnapshot, SnapshotError> {
    let file = File::create(path).map_err(io_error("creating", path))?;
    let section_count = store.shard_count();
    let table_bytes = section_count * format::TABLE_ENTRY_BYTES;
    // Sections stream through one buffer into the file while their checksum is computed: no
    // second copy of a section in memory.
    let mut out = CountingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, file), written: 0, crc: None };
    out.write_all(&vec![0u8; format::HEADER_BYTES + table_bytes]).map_err(io_error("writing", path))?;

    let mut header = Header {
        version: format::FORMAT_VERSION,
        section_count: section_count as u32,
        created_unix_ms: created_ms,
        series_count: 0,
        sample_count: 0,
        oldest_ms: i64::MAX,
        newest_ms: i64::MIN,
        table_crc: 0,
    };
    let mut table = Vec::with_capacity(table_bytes);
    // Two buffers in a pipeline: a helper thread copies shard i + 1 out of the store while this
    // thread serializes and writes shard i.
    let (filled_sender, filled) = crossbeam_channel::bounded::<(ShardSection, Header, Duration)>(1);
    let mut longest_lock_hold = Duration::ZERO;
    let (empty_sender, empty) = crossbeam_channel::bounded::<ShardSection>(2);
    for _ in 0..2 {
        let _ = empty_sender.send(ShardSection::default());
    }
    let blank = Header { series_count: 0, sample_count: 0, oldest_ms: i64::MAX, newest_ms: i64::MIN, ..header };
    std::thread::scope(|scope| -> Result<(), SnapshotError> {
        // The filling thread keeps its normal priority: it takes the shards' read locks, and a
        // low-priority thread preempted while holding one would stall appends to that shard.
        scope.spawn(move || {
            for shard_idx in 0..section_count {
                let Ok(mut section) = empty.recv() else { return };
                section.clear();
                let mut counts = blank;
                let longest_hold = fill_section(store, shard_idx, &mut section, &mut counts);
                if filled_sender.send((section, counts, longest_hold)).is_err() {
                    return;
                }
            }
        });
        // Owned by this closure: dropped on every way out of it, which ends the filling thread
        // at its next send or receive instead of leaving it blocked.
        let (filled, empty_sender) = (filled, empty_sender);
        for shard_idx in 0..section_count {
            let (section, counts, longest_hold) = filled.recv().expect("the filling thread sends every shard");
            longest_lock_hold = longest_lock_hold.max(longest_hold);
            header.series_count += counts.series_count;
            header.sample_count += counts.sample_count;
            header.oldest_ms = header.oldest_ms.min(counts.oldest_ms);
            header.newest_ms = header.newest_ms.max(counts.newest_ms);
            write_section(&mut out, shard_idx, &section, &mut table, path)?;
            let _ = empty_sender.send(section);
        }
        Ok(())
    })?;
    if header.sample_count == 0 {
        (header.oldest_ms, header.newest_ms) = (0, 0);
    }
    header.table_crc = crc32fast::hash(&table);
    let file_len = out.written;
    let mut file = out.inner.into_inner().map_err(|err| SnapshotError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source: err.into_error(),
    })?;
    file.seek(SeekFrom::Start(0)).map_err(io_error("seeking", path))?;
    file.write_all(&header.encode()).map_err(io_error("writing", path))?;
    file.write_all(&table).map_err(io_error("writing", path))?;
    file.sync_all().map_err(io_error("syncing", path))?;
    Ok(WrittenSnapshot {
        path: path.to_path_buf(),
        bytes: file_len,
        series: header.series_count,
        samples: header.sample_count,
        duration: Duration::ZERO,
        longest_lock_hold,
    })
}

type SnapshotWriter = CountingWriter<std::io::BufWriter<File>>;

/// Appends one section (aligned) and its table entry.
fn write_section(
    out: &mut SnapshotWriter,
    shard_idx: usize,
    section: &ShardSection,
    table: &mut Vec<u8>,
    path: &Path,
) -> Result<(), SnapshotError> {
    let padding = out.written.next_multiple_of(format::SECTION_ALIGN as u64) - out.written;
    out.write_all(&[0u8; format::SECTION_ALIGN][..padding as usize]).map_err(io_error("writing", path))?;
    let offset = out.written;
    out.crc = Some(crc32fast::Hasher::new());
    let serialized =
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(section, rkyv::ser::writer::IoWriter::new(&mut *out))
            .map(|_| ())
            .map_err(|err| err.to_string());
    let crc = out.crc.take().map_or(0, crc32fast::Hasher::finalize);
    serialized.map_err(|message| SnapshotError::Serialize { shard: shard_idx, message })?;
    TableEntry { offset, len: out.written - offset, crc, series_count: section.series_count() as u32 }.encode(table);
    Ok(())
}

/// Background snapshot work runs at the lowest scheduling priority: ingest and queries first.
fn lower_priority() {
    if let Err(err) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
        tracing::debug!(error = ?err, "cannot lower the snapshot thread's priority");
    }
}

/// Counts the bytes written and, while `crc` is set, checksums them.
struct CountingWriter<W> {
    inner: W,
    written: u64,
    crc: Option<crc32fast::Hasher>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        if let Some(crc) = &mut self.crc {
            crc.update(&bytes[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies one shard into `section`, a range of series per read-lock hold.
/// Returns the longest time one range took under the lock (waiting for it included).
fn fill_section(store: &Store, shard_idx: usize, section: &mut ShardSection, header: &mut Header) -> Duration {
    let mut next_slot = Some(0);
    let mut longest_hold = Duration::ZERO;
    while let Some(first_slot) = next_slot {
        // Room for the next range before the lock is taken: growing a column under the lock
        // would copy it there (measured: holds of 25 to 98 ms at 1 M series without this).
        section.reserve_for(SLOTS_PER_LOCK);
        let started = Instant::now();
        next_slot = store.visit_shard_slots(shard_idx, first_slot, SLOTS_PER_LOCK, |series| {
            section.kinds.push(format::kind_code(series.kind));
            series.key.write_encoded(&mut section.key_bytes);
            section.key_ends.push(section.key_bytes.len() as u64);
            for chunk in series.chunks() {
                if chunk.is_empty() {
                    continue;
                }
                header.oldest_ms = header.oldest_ms.min(chunk.timestamp_ms(0));
                header.newest_ms = header.newest_ms.max(chunk.timestamp_ms(chunk.len() - 1));
                header.sample_count += chunk.len() as u64;
                section.chunk_base_ms.push(chunk.base_ms);
                section.offsets_ms.extend_from_slice(chunk.offsets_ms);
                section.values.extend_from_slice(chunk.values);
                section.sample_ends.push(section.values.len() as u64);
            }
            section.chunk_ends.push(section.chunk_base_ms.len() as u64);
            header.series_count += 1;
        });
        longest_hold = longest_hold.max(started.elapsed());
    }
    longest_hold
}

/// Deletes complete snapshots beyond the `keep` newest. Failures are logged, not fatal.
fn prune(dir: &Path, keep: usize) {
    let Ok(snapshots) = list_snapshots(dir) else { return };
    for stale in snapshots.iter().skip(keep) {
        if let Err(err) = fs::remove_file(stale) {
            tracing::warn!(file = %stale.display(), error = %err, "could not delete an old snapshot");
        }
    }
}

/// Complete snapshot files of `dir`, newest first (names sort by creation time).
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut snapshots: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX))
        })
        .collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    Ok(snapshots)
}

/// A snapshot read and checked completely, ready to restore.
pub struct CheckedSnapshot {
    pub header: Header,
    sections: Vec<AlignedVec<{ format::SECTION_ALIGN }>>,
    keys: Vec<Vec<SeriesKey>>,
}

impl CheckedSnapshot {
    pub fn section_count(&self) -> usize {
        self.sections.len()
    }
}

/// Reads `path` and checks everything: header, table, every section's checksum and archive,
/// the columns' consistency and every series key. Sections are checked on up to `threads` threads.
pub fn read_snapshot(path: &Path, threads: usize) -> Result<CheckedSnapshot, FormatError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut head = vec![0u8; (format::HEADER_BYTES as u64).min(file_len) as usize];
    file.read_exact(&mut head)?;
    let header = Header::decode(&head)?;
    let table_len = header.section_count as usize * format::TABLE_ENTRY_BYTES;
    if (format::HEADER_BYTES + table_len) as u64 > file_len {
        return Err(FormatError::Truncated { len: file_len });
    }
    let mut table = vec![0u8; table_len];
    file.read_exact(&mut table)?;
    let entries = TableEntry::decode_table(&table, &header)?;
    for (section, entry) in entries.iter().enumerate() {
        let in_file = entry.offset.checked_add(entry.len).is_some_and(|end| end <= file_len);
        if !in_file || entry.offset % format::SECTION_ALIGN as u64 != 0 {
            return Err(FormatError::SectionOutOfFile { section, offset: entry.offset, len: entry.len, file_len });
        }
    }
    // Each section is read and checked on its own thread: reading into fresh memory (page
    // faults, copy) is a large part of a restore.
    let (sections, keys): (Vec<_>, Vec<_>) = parallel_map((0..entries.len()).collect(), threads, |section| {
        let bytes = read_section(path, entries[section])?;
        let keys = check_and_read_keys(section, &bytes, entries[section])?;
        Ok::<_, FormatError>((bytes, keys))
    })
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .unzip();
    Ok(CheckedSnapshot { header, sections, keys })
}

fn read_section(path: &Path, entry: TableEntry) -> Result<AlignedVec<{ format::SECTION_ALIGN }>, FormatError> {
    let mut file = File::open(path)?;
    let mut bytes = AlignedVec::<{ format::SECTION_ALIGN }>::with_capacity(entry.len as usize);
    bytes.resize(entry.len as usize, 0);
    file.seek(SeekFrom::Start(entry.offset))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn check_and_read_keys(section: usize, bytes: &[u8], entry: TableEntry) -> Result<Vec<SeriesKey>, FormatError> {
    if crc32fast::hash(bytes) != entry.crc {
        return Err(FormatError::SectionChecksum { section });
    }
    let archived = format::check_section(section, bytes)?;
    (0..archived.kinds.len())
        .map(|series| {
            let key_bytes = &archived.key_bytes[format::range_at(&archived.key_ends, series)];
            SeriesKey::from_encoded(key_bytes).map_err(|source| FormatError::Key { section, series, source })
        })
        .collect()
}

/// Runs `work` on every item, on up to `threads` scoped threads; results in the items' order.
fn parallel_map<I: Send, T: Send>(items: Vec<I>, threads: usize, work: impl Fn(I) -> T + Sync) -> Vec<T> {
    let count = items.len();
    let threads = threads.clamp(1, count.max(1));
    if threads == 1 {
        return items.into_iter().map(work).collect();
    }
    let (item_sender, item_receiver) = crossbeam_channel::bounded(count);
    for item in items.into_iter().enumerate() {
        item_sender.send(item).expect("the channel holds every item");
    }
    drop(item_sender);
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (item_receiver, work) = (item_receiver.clone(), &work);
                scope.spawn(move || item_receiver.iter().map(|(idx, item)| (idx, work(item))).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("snapshot worker threads do not panic")).collect()
    });
    results.sort_unstable_by_key(|(idx, _)| *idx);
    results.into_iter().map(|(_, result)| result).collect()
}

/// What a restore put into the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub file: PathBuf,
    pub series: u64,
    pub samples: u64,
    /// Samples older than the retention window at restore time.
    pub samples_expired: u64,
    /// Samples further ahead of the clock than `--max-future-skew` at restore time.
    pub samples_in_future: u64,
    /// Series not restored because the store reached a limit (`--max-series`,
    /// `--max-series-per-metric`, `--max-store-bytes`).
    pub series_over_limit: u64,
}

/// Puts a checked snapshot into `store`, dropping the samples ingest would refuse at
/// `now_unix_ms`: older than the store's retention, or more than its future skew ahead.
pub fn restore(store: &Store, snapshot: CheckedSnapshot, now_unix_ms: i64, threads: usize) -> RestoreReport {
    let cutoff_ms = now_unix_ms.saturating_sub(store.config().retention_ms);
    let future_limit_ms = now_unix_ms.saturating_add(store.config().future_skew_ms_max);
    let CheckedSnapshot { header, sections, keys } = snapshot;
    store.reserve_series(usize::try_from(header.series_count).unwrap_or(0).min(store.config().series_count_max));
    let per_section = parallel_map(sections.into_iter().zip(keys).collect(), threads, |(bytes, keys)| {
        let archived = rkyv::access::<format::ArchivedShardSection, rkyv::rancor::Error>(&bytes)
            .expect("the section was checked by read_snapshot");
        let mut report = RestoreReport::default();
        let mut samples = Vec::new();
        for (series, key) in keys.into_iter().enumerate() {
            let kind = format::kind_from_code(archived.kinds[series]).expect("kinds were checked");
            for chunk in format::range_at(&archived.chunk_ends, series) {
                let base_ms = archived.chunk_base_ms[chunk].to_native();
                for sample in format::range_at(&archived.sample_ends, chunk) {
                    let timestamp_ms = base_ms.saturating_add(i64::from(archived.offsets_ms[sample].to_native()));
                    if timestamp_ms < cutoff_ms {
                        report.samples_expired += 1;
                    } else if timestamp_ms > future_limit_ms {
                        report.samples_in_future += 1;
                    } else {
                        samples.push((timestamp_ms, archived.values[sample].to_native()));
                    }
                }
            }
            let restored = store.restore_series(key, kind, &samples);
            samples.clear();
            match restored {
                RestoreOutcome::Restored { samples } => {
                    report.series += 1;
                    report.samples += samples as u64;
                }
                RestoreOutcome::Refused(_) => report.series_over_limit += 1,
                RestoreOutcome::Empty => {}
            }
        }
        report
    });
    per_section.into_iter().fold(RestoreReport::default(), |total, part| RestoreReport {
        file: total.file,
        series: total.series + part.series,
        samples: total.samples + part.samples,
        samples_expired: total.samples_expired + part.samples_expired,
        samples_in_future: total.samples_in_future + part.samples_in_future,
        series_over_limit: total.series_over_limit + part.series_over_limit,
    })
}

/// At start-up: removes unfinished `.tmp` files, then restores the newest snapshot that checks
/// out, moving every newer one that does not aside. `None` when there is nothing to restore.
pub fn restore_newest(store: &Store, dir: &Path, now_unix_ms: i64, threads: usize) -> Option<RestoreReport> {
    if let Err(err) = fs::create_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %err, "snapshot directory cannot be created; starting empty");
        return None;
    }
    remove_unfinished(dir);
    let snapshots = match list_snapshots(dir) {
        Ok(snapshots) => snapshots,
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, "snapshot directory cannot be read; starting empty");
            return None;
        }
    };
    for path in snapshots {
        match read_snapshot(&path, threads) {
            Ok(checked) => {
                let mut report = restore(store, checked, now_unix_ms, threads);
                report.file = path;
                return Some(report);
            }
            Err(reason) => {
                let aside = rejected_path(&path);
                tracing::warn!(
                    file = %path.display(),
                    reason = %reason,
                    moved_to = %aside.display(),
                    "snapshot rejected; trying the next older one"
                );
                if let Err(err) = fs::rename(&path, &aside) {
                    tracing::warn!(file = %path.display(), error = %err, "could not move the rejected snapshot aside");
                }
            }
        }
    }
    None
}

fn rejected_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(REJECTED_SUFFIX);
    path.with_file_name(name)
}

/// Deletes `.otss.tmp` files: snapshots whose writer stopped before the rename.
fn remove_unfinished(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
        let unfinished = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(FILE_PREFIX) && name.ends_with(TMP_SUFFIX));
        if unfinished {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(file = %path.display(), "removed an unfinished snapshot"),
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "could not remove an unfinished snapshot")
                }
            }
        }
    }
}

/// One file of a snapshot directory, as `otelscale snapshot inspect` shows it.
#[derive(Debug)]
pub struct Inspection {
    pub path: PathBuf,
    pub bytes: u64,
    pub header: Option<Header>,
    /// `Ok(sections)` when the whole file validates.
    pub validation: Result<usize, FormatError>,
}

/// Reads and checks every snapshot of `dir`, newest first (rejected ones included, last).
pub fn inspect(dir: &Path) -> std::io::Result<Vec<Inspection>> {
    let mut paths = list_snapshots(dir)?;
    let mut rejected: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_str().is_some_and(|name| name.ends_with(REJECTED_SUFFIX)))
        .collect();
    rejected.sort_unstable_by(|a, b| b.cmp(a));
    paths.extend(rejected);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(paths
        .into_iter()
        .map(|path| {
            let bytes = fs::metadata(&path).map_or(0, |meta| meta.len());
            let header = File::open(&path).ok().and_then(|mut file| {
                let mut head = vec![0u8; format::HEADER_BYTES];
                file.read_exact(&mut head).ok().and_then(|()| Header::decode(&head).ok())
            });
            let validation = read_snapshot(&path, threads).map(|checked| checked.section_count());
            Inspection { path, bytes, header, validation }
        })
        .collect())
}

/// The background writer: one snapshot per interval on its own thread, and a last one when
/// [`Snapshotter::finish`] is called after the listeners have stopped.
pub struct Snapshotter {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    config: SnapshotConfig,
}

impl Snapshotter {
    pub fn start(store: Arc<Store>, telemetry: Arc<Telemetry>, config: SnapshotConfig) -> std::io::Result<Snapshotter> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = {
            let (store, telemetry, config) = (Arc::clone(&store), Arc::clone(&telemetry), config.clone());
            std::thread::Builder::new().name("snapshot".into()).spawn(move || {
                lower_priority();
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(config.interval) {
                    // A panic fails this snapshot only (counted, the previous file kept); the
                    // thread writes the next one.
                    if crate::panics::catch(&telemetry, PanicSite::Background, || {
                        write_and_record(&store, &telemetry, &config)
                    })
                    .is_err()
                    {
                        telemetry.snapshot_failed();
                    }
                }
            })?
        };
        Ok(Snapshotter { stop, thread, store, telemetry, config })
    }

    /// Stops the background thread and writes the final snapshot (blocking).
    pub fn finish(self) -> Option<WrittenSnapshot> {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the snapshot thread panicked");
        }
        crate::panics::catch(&self.telemetry, PanicSite::Background, || {
            write_and_record(&self.store, &self.telemetry, &self.config)
        })
        .unwrap_or_else(|_| {
            self.telemetry.snapshot_failed();
            None
        })
    }
}

fn write_and_record(store: &Store, telemetry: &Telemetry, config: &SnapshotConfig) -> Option<WrittenSnapshot> {
    match write_snapshot(store, &config.dir, config.keep, crate::clock::now_ms()) {
        Ok(written) => {
            telemetry.snapshot_written(written.duration, written.bytes, crate::clock::now_ms());
            tracing::debug!(
                file = %written.path.display(),
                bytes = written.bytes,
                series = written.series,
                samples = written.samples,
                duration_ms = written.duration.as_millis() as u64,
                longest_lock_hold_us = written.longest_lock_hold.as_micros() as u64,
                "snapshot written"
            );
            Some(written)
        }
        Err(err) => {
            telemetry.snapshot_failed();
            tracing::error!(error = %err, "snapshot failed; the previous one is kept");
            None
        }
    }
}

#[cfg(test)]
mod tests;
