//! Group commit: every write runs on one connection owned by a writer task, and writes that
//! arrive while a commit is in progress share the next transaction — one fsync for many
//! clients. Each write runs inside its own SAVEPOINT, so one write failing or refusing
//! rolls back only itself.

use std::future::Future;
use std::pin::Pin;

use berth_registry::StorageError;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

/// Most writes that share one transaction.
const MAX_BATCH: usize = 64;
/// Writes waiting for the writer at most (back-pressure beyond that).
const QUEUE: usize = 256;

/// How durable a write must be before it is answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Durability {
    /// fsync the WAL at commit (`synchronous=FULL`): anything a client is told is stored.
    Durable,
    /// No fsync at commit (`synchronous=NORMAL`): upload-session bookkeeping, which survives
    /// a process crash and, after a power loss, is at worst a resumable upload restarted.
    /// A batch is relaxed only when every write in it is.
    Relaxed,
}

/// A boxed future borrowing the writer's connection.
pub type ConnFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// What a job hands back to the writer: keep its changes or not, and how to answer.
struct Done {
    keep: bool,
    answer: Box<dyn FnOnce(Result<(), String>) + Send>,
}

type Job = Box<
    dyn for<'c> FnOnce(&'c mut SqliteConnection) -> Pin<Box<dyn Future<Output = Done> + Send + 'c>>
        + Send,
>;

/// Handle for submitting writes to the writer task.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<(Durability, Job)>,
}

impl Writer {
    /// Starts the writer task on `conn` (which must not be used elsewhere).
    pub fn start(conn: SqliteConnection) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, rx));
        Writer { tx }
    }

    /// Runs `f` in the next transaction; answers once that transaction has committed.
    /// `keep` decides from the result whether its changes stay (false rolls back just it).
    pub async fn write<T, F>(
        &self,
        durability: Durability,
        keep: fn(&T) -> bool,
        f: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> ConnFuture<'c, T> + Send + 'static,
    {
        let (answer_tx, answer_rx) = oneshot::channel::<Result<T, StorageError>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let keep = matches!(&result, Ok(v) if keep(v));
                Done {
                    keep,
                    answer: Box::new(move |commit| {
                        let answer = match (commit, result) {
                            (Ok(()), Ok(v)) => Ok(v),
                            (_, Err(e)) => Err(crate::sqlite::db_err(e)),
                            (Err(e), Ok(_)) => Err(StorageError::Backend(format!(
                                "metadata commit failed: {e}"
                            ))),
                        };
                        let _ = answer_tx.send(answer);
                    }),
                }
            })
        });
        self.tx
            .send((durability, job))
            .await
            .map_err(|_| StorageError::Backend("metadata writer stopped".into()))?;
        answer_rx
            .await
            .map_err(|_| StorageError::Backend("metadata writer stopped".into()))?
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<(Durability, Job)>) {
    let mut mode = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durability = if batch.iter().any(|(d, _)| *d == Durability::Durable) {
            Durability::Durable
        } else {
            Durability::Relaxed
        };
        let commit = run_batch(&mut conn, &mut mode, durability, batch).await;
        for answer in commit.1 {
            answer(commit.0.clone());
        }
    }
}

type Answers = Vec<Box<dyn FnOnce(Result<(), String>) + Send>>;

async fn run_batch(
    conn: &mut SqliteConnection,
    mode: &mut Option<Durability>,
    durability: Durability,
    batch: Vec<(Durability, Job)>,
) -> (Result<(), String>, Answers) {
    let mut answers: Answers = Vec::with_capacity(batch.len());
    if *mode != Some(durability) {
        let pragma = match durability {
            Durability::Durable => "PRAGMA synchronous = FULL",
            Durability::Relaxed => "PRAGMA synchronous = NORMAL",
        };
        if let Err(e) = sqlx::query(pragma).execute(&mut *conn).await {
            // Never commit with a weaker setting than asked. The batch's jobs are dropped
            // unrun, so their callers get an error.
            *mode = None;
            return (Err(format!("setting durability: {e}")), answers);
        }
        *mode = Some(durability);
    }
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return (Err(format!("begin: {e}")), answers),
    };
    for (_, job) in batch {
        if let Err(e) = sqlx::query("SAVEPOINT job").execute(&mut *tx).await {
            return (Err(format!("savepoint: {e}")), answers);
        }
        let done = job(&mut tx).await;
        let end = if done.keep {
            "RELEASE job"
        } else {
            "ROLLBACK TO job"
        };
        if let Err(e) = sqlx::query(end).execute(&mut *tx).await {
            answers.push(done.answer);
            return (Err(format!("savepoint: {e}")), answers);
        }
        if !done.keep
            && let Err(e) = sqlx::query("RELEASE job").execute(&mut *tx).await
        {
            answers.push(done.answer);
            return (Err(format!("savepoint: {e}")), answers);
        }
        answers.push(done.answer);
    }
    match tx.commit().await {
        Ok(()) => (Ok(()), answers),
        Err(e) => (Err(format!("commit: {e}")), answers),
    }
}
