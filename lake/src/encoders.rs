//! The threads that encode lake files: one per core (up to `MAX_ENCODERS`), shared by every
//! lake writer of the process.
//!
//! A roll's chunks and its footer are encoded on these threads rather than on the runtime's
//! blocking pool, whose threads take turns: on a few threads that stay busy, each thread's
//! memory (a chunk's decoded columns, page buffers, compressor state) is reused chunk after
//! chunk instead of new memory on each of several threads. Jobs run in the order they come,
//! as many at once as there are threads, which is also what bounds the encoding to the cores.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Encoder threads at most (a roll is encoded by one thread at a time; more threads than
/// rolls in memory would idle).
pub const MAX_ENCODERS: usize = 4;

/// How many encoder threads run: one per core, at most `MAX_ENCODERS`.
pub fn count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_ENCODERS)
}

fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..count() {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("lake-encoder-{i}"))
                    .spawn(move || loop {
                        // One thread waits for the next job while the others wait for the
                        // lock; the lock is let go before the job runs.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::error!(error = %e, "lake: an encoder thread cannot start"),
                }
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

/// Runs `f` on an encoder thread once one is free; None when it panicked (logged by the panic
/// hook) or no encoder thread could start.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)).ok());
    });
    queue()?.send(job).ok()?;
    rx.await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_a_panic_is_none() {
        let name = run(|| std::thread::current().name().map(str::to_owned)).await;
        assert!(name
            .flatten()
            .is_some_and(|n| n.starts_with("lake-encoder-")));
        let panicked: Option<()> = run(|| panic!("a job that panics")).await;
        assert!(panicked.is_none());
        // The thread that ran it still takes jobs.
        let mut sums = Vec::new();
        for i in 0..(2 * count() as u64) {
            sums.push(run(move || i * 2).await);
        }
        assert_eq!(
            sums,
            (0..2 * count() as u64)
                .map(|i| Some(i * 2))
                .collect::<Vec<_>>()
        );
    }
}
