//! The bandwidth limit (`throttle_bytes_per_sec`): a token bucket shared by every source, holding
//! at most one second of bytes; a write waits until its bytes are available.

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

pub struct Throttle {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn take(&self, bytes: usize) {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
        s.1 = now;
        s.0 -= bytes as f64;
        if s.0 < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-s.0 / self.rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_rate() {
        let t = Throttle::new(1_000_000);
        let start = Instant::now();
        for _ in 0..20 {
            t.take(100_000).await;
        }
        // 2 MB at 1 MB/s with a 1 MB bucket: about one second.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
