//! The blob store: submitted files, logs and attachments, kept on the local
//! filesystem and addressed by the SHA-256 of their content, so writing the
//! same content twice (a retried request) is harmless.
//!
//! Blobs are written as they stream in: a writer hashes and appends each
//! chunk to a temporary file, and `finish` moves it to its final name.

use std::io;
use std::path::{Path, PathBuf};

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

    /// Opens a blob for reading.
    pub fn open_blob(&self, key: &str) -> io::Result<std::fs::File> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
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
}
