//! The blob store: submitted files, logs and attachments, kept on the local
//! filesystem and addressed by the SHA-256 of their content, so writing the
//! same content twice (a retried request) is harmless.
//!
//! Blobs are written as they stream in: a writer hashes and appends each
//! chunk to a temporary file, and `finish` moves it to its final name. So
//! a blob file's modification time is when its content was last written:
//! writing content that is already stored replaces the file with a fresh
//! one. The blob sweep (`crate::retention`) relies on it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The content's SHA-256, in hex.
    pub key: String,
    /// Length in bytes.
    pub length: u64,
}

/// A blob file found by a walk of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its key.
    pub key: String,
    /// When its content was last written.
    pub modified: SystemTime,
    /// Its length in bytes.
    pub length: u64,
}

/// The name prefix, in `tmp/`, of a blob being removed.
const SET_ASIDE: &str = "removing-";

/// Whether `key` is a blob key (a SHA-256 in hex).
fn is_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The blob files of one directory of the store.
fn list_blobs(dir: &Path) -> io::Result<Vec<StoredBlob>> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(key) = entry.file_name().to_str().filter(|k| is_key(k)).map(str::to_string) else { continue };
        let metadata = match entry.metadata() {
            Ok(m) => m,
            // Removed since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        blobs.push(StoredBlob { key, modified: metadata.modified()?, length: metadata.len() });
    }
    Ok(blobs)
}

/// Blobs under one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating it if needed) a blob store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<BlobStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobStore { root })
    }

    /// Where the blob with `key` lives.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(&key[0..2]).join(&key[2..4]).join(key)
    }

    /// The blobs whose keys start with the two hex digits of `shard`, one
    /// list per directory of the next two digits (each a few hundredth of
    /// a percent of every blob), so that a walk of the whole store never
    /// holds more than one directory's keys.
    pub fn shard(&self, shard: u8) -> io::Result<impl Iterator<Item = io::Result<Vec<StoredBlob>>>> {
        let dir = self.root.join(format!("{shard:02x}"));
        let mut subdirs = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect::<io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        subdirs.sort();
        Ok(subdirs.into_iter().map(|subdir| list_blobs(&subdir)))
    }

    /// Removes the blob `key` unless its file was written at or after
    /// `written_before`; returns whether it was removed.
    ///
    /// The file is first moved aside (atomically) and its time looked at
    /// there: a writer that stored the same content again just before the
    /// move left a fresh file, which is put back; one that stores it just
    /// after writes a new file at the blob's place. Either way the blob
    /// survives. A removal cut short leaves the file aside, where
    /// [`BlobStore::set_aside`] finds it.
    pub fn remove_unless_written_since(&self, key: &str, written_before: SystemTime) -> io::Result<bool> {
        let place = self.path(key);
        let aside = self.root.join("tmp").join(format!("{SET_ASIDE}{key}"));
        match std::fs::rename(&place, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let decided = std::fs::metadata(&aside).and_then(|m| m.modified()).and_then(|modified| {
            if modified >= written_before {
                self.put_back(key).map(|()| false)
            } else {
                std::fs::remove_file(&aside).map(|()| true)
            }
        });
        match decided {
            // A concurrent recovery of blobs set aside took it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            other => other,
        }
    }

    /// Keys of blobs a removal moved aside and did not finish with.
    pub fn set_aside(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let name = entry?.file_name();
            if let Some(key) = name.to_str().and_then(|n| n.strip_prefix(SET_ASIDE)).filter(|k| is_key(k)) {
                keys.push(key.to_string());
            }
        }
        Ok(keys)
    }

    /// Puts a blob moved aside back in its place.
    pub fn put_back(&self, key: &str) -> io::Result<()> {
        std::fs::rename(self.root.join("tmp").join(format!("{SET_ASIDE}{key}")), self.path(key))
    }

    /// Forgets a blob moved aside.
    pub fn discard_set_aside(&self, key: &str) -> io::Result<()> {
        std::fs::remove_file(self.root.join("tmp").join(format!("{SET_ASIDE}{key}")))
    }

    /// Removes the partial files of writers that died (they stop changing
    /// once their writer is gone) last written before `written_before`;
    /// returns how many.
    pub fn remove_abandoned_partials(&self, written_before: SystemTime) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let set_aside = entry.file_name().to_str().is_some_and(|n| n.starts_with(SET_ASIDE));
            if !set_aside && entry.metadata()?.modified()? < written_before {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, key: &str) -> io::Result<std::fs::File> {
        if !is_key(key) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a blob key: {key:?}")));
        }
        std::fs::File::open(self.path(key))
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let temp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        let file = tokio::fs::File::from_std(temp.reopen()?);
        Ok(BlobWriter {
            root: self.root.clone(),
            temp,
            file: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            length: 0,
            strip_nul: false,
        })
    }

    /// Starts writing a new blob from which NUL bytes are removed (logs:
    /// SQUAD strips them, and databases refuse them in text).
    pub fn writer_without_nul(&self) -> io::Result<BlobWriter> {
        let mut writer = self.writer()?;
        writer.strip_nul = true;
        Ok(writer)
    }

    /// Stores `data` as a blob.
    pub async fn put(&self, data: &[u8]) -> io::Result<Blob> {
        let mut writer = self.writer()?;
        writer.write(data).await?;
        writer.finish().await
    }
}

/// A blob being written. Dropping it unfinished removes the partial file.
pub struct BlobWriter {
    root: PathBuf,
    temp: tempfile::NamedTempFile,
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    length: u64,
    strip_nul: bool,
}

impl BlobWriter {
    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.strip_nul && chunk.contains(&0) {
            let kept: Vec<u8> = chunk.iter().copied().filter(|&b| b != 0).collect();
            return self.append(&kept).await;
        }
        self.append(chunk).await
    }

    async fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.length += chunk.len() as u64;
        self.file.write_all(chunk).await
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Flushes the content to disk and gives the blob its final name.
    pub async fn finish(mut self) -> io::Result<Blob> {
        self.file.flush().await?;
        self.file.get_mut().sync_data().await?;
        let key = hex::encode(self.hasher.finalize());
        let path = BlobStore { root: self.root }.path(&key);
        create_parent(&path)?;
        self.temp.persist(&path).map_err(|e| e.error)?;
        Ok(Blob { key, length: self.length })
    }
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn content_addressed_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let a = w.finish().await.unwrap();
        let b = store.put(b"hello world").await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.length, 11);
        assert_eq!(a.key, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let mut text = String::new();
        store.open_blob(&a.key).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        assert!(store.open_blob("../../etc/passwd").is_err());
    }

    #[tokio::test]
    async fn nul_bytes_are_stripped_from_logs_and_partial_blobs_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer_without_nul().unwrap();
        w.write(b"a\0b\0\0c").await.unwrap();
        let blob = w.finish().await.unwrap();
        assert_eq!(std::fs::read(store.path(&blob.key)).unwrap(), b"abc");

        let mut w = store.writer().unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn removal_spares_a_blob_written_again_and_walks_by_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blob = store.put(b"content").await.unwrap();
        let age = |ago: u64| {
            let file = std::fs::File::options().write(true).open(store.path(&blob.key)).unwrap();
            file.set_modified(SystemTime::now() - std::time::Duration::from_secs(ago)).unwrap();
        };
        let cutoff = SystemTime::now() - std::time::Duration::from_secs(3600);
        age(7200);
        store.put(b"content").await.unwrap();
        assert!(!store.remove_unless_written_since(&blob.key, cutoff).unwrap(), "written again: kept");
        assert!(store.path(&blob.key).exists());
        assert!(store.set_aside().unwrap().is_empty(), "put back in its place");

        age(7200);
        let shard = u8::from_str_radix(&blob.key[..2], 16).unwrap();
        let listed: Vec<StoredBlob> = store.shard(shard).unwrap().flat_map(Result::unwrap).collect();
        assert_eq!(listed.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), vec![blob.key.as_str()]);
        assert!(listed[0].modified < cutoff);
        assert!(store.remove_unless_written_since(&blob.key, cutoff).unwrap());
        assert!(!store.path(&blob.key).exists());
        assert!(!store.remove_unless_written_since(&blob.key, cutoff).unwrap(), "already gone");
    }
}
