//! The snapshot file format, version 1.
//!
//! ```text
//! [header, 64 bytes]
//! [section table: one 32-byte entry per section]
//! [section 0][padding to 16][section 1] …
//! ```
//!
//! Header, little-endian: magic `OTSCSNAP`, format version (u32), section count (u32), creation
//! time (unix ms, i64), series and sample counts (u64 each), oldest and newest sample (unix ms,
//! i64 each), CRC-32 of the section table (u32), CRC-32 of the header's first 60 bytes (u32).
//! Table entry: offset (u64), length (u64), CRC-32 of the section's bytes (u32), series in the
//! section (u32), 8 bytes reserved (zero).
//!
//! A section is the rkyv archive of one store shard's [`ShardSection`]: columns, not a tree of
//! small objects, so that checking an archive costs a few bounds checks per column and restoring
//! it is a walk over flat arrays. Series are re-sharded by hash on load, so the writer's shard
//! count does not matter to the reader.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::store::{KeyDecodeError, SeriesKind};

pub const MAGIC: [u8; 8] = *b"OTSCSNAP";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const TABLE_ENTRY_BYTES: usize = 32;
/// Sections start at multiples of this, the alignment rkyv archives are read with.
pub const SECTION_ALIGN: usize = 16;
/// Most sections a file may declare (a corrupt count must not make the reader allocate much).
pub const SECTIONS_MAX: u32 = 65_536;

/// Why a snapshot file cannot be used. Each names what is wrong; the file is then moved aside.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is shorter than its header or section table ({len} bytes)")]
    Truncated { len: u64 },
    #[error("not an otelscale snapshot (bad magic bytes)")]
    BadMagic,
    #[error("format version {found}, this build reads version {FORMAT_VERSION}")]
    WrongVersion { found: u32 },
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("section table checksum mismatch")]
    TableChecksum,
    #[error("{count} sections declared, at most {SECTIONS_MAX} allowed")]
    TooManySections { count: u32 },
    #[error("section {section} lies outside the file (offset {offset}, length {len}, file {file_len} bytes)")]
    SectionOutOfFile { section: usize, offset: u64, len: u64, file_len: u64 },
    #[error("section {section} checksum mismatch")]
    SectionChecksum { section: usize },
    #[error("section {section} is not a valid archive: {message}")]
    Archive { section: usize, message: String },
    #[error("section {section}: {problem}")]
    Inconsistent { section: usize, problem: String },
    #[error("section {section}, series {series}: bad key: {source}")]
    Key { section: usize, series: usize, source: KeyDecodeError },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

/// One shard's series as columns. Series `i` has kind `kinds[i]`, key bytes
/// `key_bytes[key_ends[i-1]..key_ends[i]]` (a [`crate::store::SeriesKey`] encoding) and chunks
/// `chunk_ends[i-1]..chunk_ends[i]`; chunk `j` has base `chunk_base_ms[j]` and samples
/// `sample_ends[j-1]..sample_ends[j]` of `offsets_ms` (from the chunk's base) and `values`.
#[derive(Debug, Default, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardSection {
    pub kinds: Vec<u8>,
    pub key_ends: Vec<u64>,
    pub key_bytes: Vec<u8>,
    pub chunk_ends: Vec<u64>,
    pub chunk_base_ms: Vec<i64>,
    pub sample_ends: Vec<u64>,
    pub offsets_ms: Vec<u32>,
    pub values: Vec<f64>,
}

impl ShardSection {
    pub fn series_count(&self) -> usize {
        self.kinds.len()
    }

    /// Makes room for `series` more series, sized from the averages of the series already in
    /// (a first guess of one chunk of 120 samples and a 256-byte key before any).
    pub fn reserve_for(&mut self, series: usize) {
        let held = self.kinds.len().max(1);
        let per_series = |column_len: usize, guess: usize| {
            if self.kinds.is_empty() {
                guess
            } else {
                column_len.div_ceil(held)
            }
        };
        let key_bytes = per_series(self.key_bytes.len(), 256) * series;
        let chunks = per_series(self.chunk_base_ms.len(), 1) * series;
        let samples = per_series(self.values.len(), 120) * series;
        self.kinds.reserve(series);
        self.key_ends.reserve(series);
        self.chunk_ends.reserve(series);
        self.key_bytes.reserve(key_bytes);
        self.chunk_base_ms.reserve(chunks);
        self.sample_ends.reserve(chunks);
        self.offsets_ms.reserve(samples);
        self.values.reserve(samples);
    }

    /// Empties every column and keeps its capacity for the next shard.
    pub fn clear(&mut self) {
        self.kinds.clear();
        self.key_ends.clear();
        self.key_bytes.clear();
        self.chunk_ends.clear();
        self.chunk_base_ms.clear();
        self.sample_ends.clear();
        self.offsets_ms.clear();
        self.values.clear();
    }

    pub fn to_bytes(&self) -> Result<AlignedVec, rancor::Error> {
        rkyv::to_bytes::<rancor::Error>(self)
    }
}

pub fn kind_code(kind: SeriesKind) -> u8 {
    match kind {
        SeriesKind::Gauge => 0,
        SeriesKind::CumulativeCounter => 1,
        SeriesKind::Delta => 2,
    }
}

pub fn kind_from_code(code: u8) -> Option<SeriesKind> {
    match code {
        0 => Some(SeriesKind::Gauge),
        1 => Some(SeriesKind::CumulativeCounter),
        2 => Some(SeriesKind::Delta),
        _ => None,
    }
}

/// The fixed-size header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub section_count: u32,
    pub created_unix_ms: i64,
    pub series_count: u64,
    pub sample_count: u64,
    /// Oldest and newest sample, unix ms; both 0 when there is none.
    pub oldest_ms: i64,
    pub newest_ms: i64,
    pub table_crc: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.version.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.section_count.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.series_count.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.sample_count.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.oldest_ms.to_le_bytes());
        bytes[48..56].copy_from_slice(&self.newest_ms.to_le_bytes());
        bytes[56..60].copy_from_slice(&self.table_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&header_crc.to_le_bytes());
        bytes
    }

    /// Checks magic, version and checksum, in that order, so that the error names the first
    /// thing wrong (a file of another version reports its version, not a checksum).
    pub fn decode(bytes: &[u8]) -> Result<Header, FormatError> {
        if bytes.is_empty() {
            return Err(FormatError::Empty);
        }
        let bytes: &[u8; HEADER_BYTES] = bytes
            .get(..HEADER_BYTES)
            .and_then(|head| head.try_into().ok())
            .ok_or(FormatError::Truncated { len: bytes.len() as u64 })?;
        if bytes[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(FormatError::WrongVersion { found: version });
        }
        if crc32fast::hash(&bytes[..60]) != u32_at(60) {
            return Err(FormatError::HeaderChecksum);
        }
        let header = Header {
            version,
            section_count: u32_at(12),
            created_unix_ms: u64_at(16) as i64,
            series_count: u64_at(24),
            sample_count: u64_at(32),
            oldest_ms: u64_at(40) as i64,
            newest_ms: u64_at(48) as i64,
            table_crc: u32_at(56),
        };
        if header.section_count > SECTIONS_MAX {
            return Err(FormatError::TooManySections { count: header.section_count });
        }
        Ok(header)
    }
}

/// Where a section lies in the file and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
    pub series_count: u32,
}

impl TableEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.series_count.to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
    }

    pub fn decode_table(table: &[u8], header: &Header) -> Result<Vec<TableEntry>, FormatError> {
        if crc32fast::hash(table) != header.table_crc {
            return Err(FormatError::TableChecksum);
        }
        Ok(table
            .chunks_exact(TABLE_ENTRY_BYTES)
            .map(|entry| {
                let u64_at = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("eight bytes"));
                let u32_at = |at: usize| u32::from_le_bytes(entry[at..at + 4].try_into().expect("four bytes"));
                TableEntry { offset: u64_at(0), len: u64_at(8), crc: u32_at(16), series_count: u32_at(20) }
            })
            .collect())
    }
}

/// Reads a section after its checksum matched: rkyv's checked access, then the consistency of
/// the columns (every end in range and not decreasing, every kind known).
pub fn check_section(section: usize, bytes: &[u8]) -> Result<&ArchivedShardSection, FormatError> {
    let archived = rkyv::access::<ArchivedShardSection, rancor::Error>(bytes)
        .map_err(|err| FormatError::Archive { section, message: err.to_string() })?;
    let inconsistent = |problem: String| FormatError::Inconsistent { section, problem };
    let series_count = archived.kinds.len();
    if archived.key_ends.len() != series_count || archived.chunk_ends.len() != series_count {
        return Err(inconsistent(format!(
            "{series_count} kinds, {} key ends, {} chunk ends",
            archived.key_ends.len(),
            archived.chunk_ends.len()
        )));
    }
    if archived.chunk_base_ms.len() != archived.sample_ends.len() {
        return Err(inconsistent("chunk bases and chunk ends differ in length".into()));
    }
    if archived.offsets_ms.len() != archived.values.len() {
        return Err(inconsistent("timestamps and values differ in length".into()));
    }
    check_ends("key", archived.key_ends.iter().map(|end| end.to_native()), archived.key_bytes.len())
        .map_err(inconsistent)?;
    check_ends("chunk", archived.chunk_ends.iter().map(|end| end.to_native()), archived.chunk_base_ms.len())
        .map_err(inconsistent)?;
    check_ends("sample", archived.sample_ends.iter().map(|end| end.to_native()), archived.values.len())
        .map_err(inconsistent)?;
    if let Some(code) = archived.kinds.iter().find(|&&code| kind_from_code(code).is_none()) {
        return Err(inconsistent(format!("unknown series kind {code}")));
    }
    Ok(archived)
}

/// Ends must not decrease and the last must equal the column's length.
fn check_ends(what: &str, ends: impl Iterator<Item = u64>, column_len: usize) -> Result<(), String> {
    let mut previous = 0u64;
    for end in ends {
        if end < previous {
            return Err(format!("{what} ends decrease"));
        }
        previous = end;
    }
    if previous != column_len as u64 {
        return Err(format!("{what} ends stop at {previous}, the column holds {column_len}"));
    }
    Ok(())
}

/// The range `ends[idx-1]..ends[idx]` (from 0 for the first).
pub fn range_at(ends: &[rkyv::rend::u64_le], idx: usize) -> std::ops::Range<usize> {
    let start = if idx == 0 { 0 } else { ends[idx - 1].to_native() as usize };
    start..ends[idx].to_native() as usize
}
