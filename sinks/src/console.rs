//! The console sink: one line per event on standard output.

use std::io::Write;

use futures::future::BoxFuture;
use trib_pipelines::config::sinks::{ConsoleSink, Encoding};
use trib_pipelines::event::deliver_all;
use trib_pipelines::runtime::{Sink, SinkContext};

pub struct Console {
    encoding: Encoding,
}

impl Console {
    pub fn new(c: &ConsoleSink) -> Self {
        Self {
            encoding: c.encoding,
        }
    }
}

impl Sink for Console {
    fn run(self: Box<Self>, mut cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut buf = Vec::new();
            while let Some(batch) = cx.input.recv().await {
                buf.clear();
                for e in &batch {
                    match self.encoding {
                        Encoding::Text => e.write_body(&mut buf),
                        Encoding::Json => serde_json::to_writer(&mut buf, &e.to_json())?,
                    }
                    buf.push(b'\n');
                }
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()?;
                cx.metrics.bytes_out.inc_by(buf.len() as u64);
                cx.metrics.events_out.inc_by(batch.len() as u64);
                deliver_all(batch);
            }
            Ok(())
        })
    }
}
