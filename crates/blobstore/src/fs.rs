//! [`FsBlobStore`]: blobs as files under `<root>/blobs/<alg>/<2 hex>/<hex>`, uploads under
//! `<root>/uploads/<uuid>`.
//!
//! Durability: an upload is fsynced, renamed into place (atomic on POSIX) and its directory
//! fsynced before `commit_upload` returns, so a blob file is either absent or whole.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest};
use berth_registry::ports::StoreResult;
use berth_registry::{BlobStore, ByteRange, ByteStream, StorageError, UploadId};
use tokio::fs::{self, File, OpenOptions};

/// Content-addressed blobs and upload files in one directory tree.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn io_err(e: io::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn not_found_or(e: io::Error, what: &str) -> StorageError {
    if e.kind() == ErrorKind::NotFound {
        StorageError::NotFound(what.to_owned())
    } else {
        io_err(e)
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs")).await?;
        fs::create_dir_all(root.join("uploads")).await?;
        Ok(FsBlobStore { root })
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn ping(&self) -> StoreResult<()> {
        for dir in ["blobs", "uploads"] {
            let meta = fs::metadata(self.root.join(dir)).await.map_err(io_err)?;
            if !meta.is_dir() {
                return Err(StorageError::Backend(format!("{dir} is not a directory")));
            }
        }
        Ok(())
    }

    async fn create_upload(&self, id: &UploadId) -> StoreResult<()> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.upload_path(id))
            .await
            .map_err(io_err)?;
        Ok(())
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
        inspect: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> StoreResult<u64> {
        crate::io::append(self.upload_path(id), offset, body, inspect).await
    }

    async fn truncate_upload(&self, id: &UploadId, len: u64) -> StoreResult<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(self.upload_path(id))
            .await
            .map_err(|e| not_found_or(e, id.as_str()))?;
        file.set_len(len).await.map_err(io_err)
    }

    async fn read_upload(&self, id: &UploadId) -> StoreResult<ByteStream> {
        let file = File::open(self.upload_path(id))
            .await
            .map_err(|e| not_found_or(e, id.as_str()))?;
        let len = file.metadata().await.map_err(io_err)?.len();
        Ok(crate::io::read(file.into_std().await, 0, len))
    }

    async fn commit_upload(&self, id: &UploadId, digest: &Digest) -> StoreResult<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        let file = File::open(&from)
            .await
            .map_err(|e| not_found_or(e, id.as_str()))?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let dir = to.parent().map(Path::to_owned).unwrap_or_default();
        fs::create_dir_all(&dir).await.map_err(io_err)?;
        if fs::try_exists(&to).await.map_err(io_err)? {
            // Same verified content already stored: keep the existing copy.
            fs::remove_file(&from).await.map_err(io_err)?;
            return Ok(());
        }
        fs::rename(&from, &to).await.map_err(io_err)?;
        sync_dir(&dir).await.map_err(io_err)?;
        Ok(())
    }

    async fn delete_upload(&self, id: &UploadId) -> StoreResult<()> {
        match fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    async fn list_uploads(&self) -> StoreResult<Vec<(UploadId, SystemTime)>> {
        let mut out = Vec::new();
        let mut dir = fs::read_dir(self.root.join("uploads"))
            .await
            .map_err(io_err)?;
        while let Some(entry) = dir.next_entry().await.map_err(io_err)? {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(UploadId::parse) else {
                continue;
            };
            let modified = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((id, modified));
        }
        Ok(out)
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> StoreResult<ByteStream> {
        let file = File::open(self.blob_path(digest))
            .await
            .map_err(|e| not_found_or(e, digest.as_str()))?;
        let (offset, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, file.metadata().await.map_err(io_err)?.len()),
        };
        Ok(crate::io::read(file.into_std().await, offset, len))
    }

    async fn delete_blob(&self, digest: &Digest) -> StoreResult<()> {
        match fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    async fn list_blobs(&self) -> StoreResult<Vec<Digest>> {
        Ok(self.walk_blobs().await?.0)
    }

    async fn list_strays(&self) -> StoreResult<Vec<String>> {
        Ok(self.walk_blobs().await?.1)
    }

    async fn delete_stray(&self, name: &str) -> StoreResult<()> {
        let path = self.root.join("blobs").join(name);
        // Only names produced by walk_blobs (relative, no parent components) are accepted.
        if Path::new(name)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(StorageError::Backend(format!(
                "refusing stray path {name:?}"
            )));
        }
        match fs::remove_file(path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }
}

impl FsBlobStore {
    /// Walks `blobs/`: well-named blob files, and everything else (relative paths).
    async fn walk_blobs(&self) -> StoreResult<(Vec<Digest>, Vec<String>)> {
        let root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || walk_blobs_sync(&root))
            .await
            .map_err(StorageError::backend)?
            .map_err(io_err)
    }
}

fn walk_blobs_sync(root: &Path) -> io::Result<(Vec<Digest>, Vec<String>)> {
    let mut digests = Vec::new();
    let mut strays = Vec::new();
    for alg_entry in std::fs::read_dir(root)? {
        let alg_entry = alg_entry?;
        let alg_name = alg_entry.file_name().to_string_lossy().into_owned();
        let algorithm = Algorithm::parse(&alg_name).ok();
        if algorithm.is_none() || !alg_entry.file_type()?.is_dir() {
            collect_strays(&alg_entry.path(), &alg_name, &mut strays)?;
            continue;
        }
        for prefix_entry in std::fs::read_dir(alg_entry.path())? {
            let prefix_entry = prefix_entry?;
            let prefix = prefix_entry.file_name().to_string_lossy().into_owned();
            let rel_prefix = format!("{alg_name}/{prefix}");
            if !prefix_entry.file_type()?.is_dir() {
                strays.push(rel_prefix);
                continue;
            }
            for file in std::fs::read_dir(prefix_entry.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                let parsed = format!("{alg_name}:{name}").parse::<Digest>().ok();
                match parsed {
                    Some(d) if name.starts_with(&prefix) && file.file_type()?.is_file() => {
                        digests.push(d)
                    }
                    _ => {
                        collect_strays(&file.path(), &format!("{rel_prefix}/{name}"), &mut strays)?
                    }
                }
            }
        }
    }
    digests.sort();
    strays.sort();
    Ok((digests, strays))
}

fn collect_strays(path: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            collect_strays(&e.path(), &format!("{rel}/{name}"), out)?;
        }
    } else {
        out.push(rel.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::DigestHasher;
    use bytes::Bytes;
    use futures_util::StreamExt;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn upload_commit_read_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let mut h = DigestHasher::new(Algorithm::Sha256);
        let n = store
            .append_upload(&id, 0, body(&[b"hello ", b"wor"]), &mut |b| h.update(b))
            .await
            .unwrap();
        assert_eq!(n, 9);
        let n = store
            .append_upload(&id, 9, body(&[b"ld"]), &mut |b| h.update(b))
            .await
            .unwrap();
        assert_eq!(n, 2);
        let digest = h.finalize();
        assert_eq!(digest, Digest::of(Algorithm::Sha256, b"hello world"));
        assert!(matches!(
            store.read_blob(&digest, None).await,
            Err(StorageError::NotFound(_))
        ));
        store.commit_upload(&id, &digest).await.unwrap();
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            b"hello world"
        );
        let r = ByteRange { start: 6, end: 9 };
        assert_eq!(
            collect(store.read_blob(&digest, Some(r)).await.unwrap()).await,
            b"worl"
        );
        assert_eq!(store.list_blobs().await.unwrap(), vec![digest.clone()]);
        store.delete_blob(&digest).await.unwrap();
        assert!(matches!(
            store.read_blob(&digest, None).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn truncate_undoes_a_failed_chunk_and_strays_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::other("client went away")),
        ]));
        let r = store.append_upload(&id, 0, failing, &mut |_| {}).await;
        assert!(matches!(r, Err(StorageError::Body(_))));
        store.truncate_upload(&id, 0).await.unwrap();
        assert!(
            collect(store.read_upload(&id).await.unwrap())
                .await
                .is_empty()
        );

        std::fs::create_dir_all(dir.path().join("blobs/sha256/ab")).unwrap();
        std::fs::write(dir.path().join("blobs/sha256/ab/junk"), b"x").unwrap();
        assert_eq!(
            store.list_strays().await.unwrap(),
            vec!["sha256/ab/junk".to_string()]
        );
        store.delete_stray("sha256/ab/junk").await.unwrap();
        assert!(store.list_strays().await.unwrap().is_empty());
        assert!(store.delete_stray("../escape").await.is_err());
    }
}
