//! The stdin source: each line of standard input is a raw event; the pipeline drains and ends
//! at end of input.

use futures::future::BoxFuture;
use tokio::io::BufReader;
use trib_pipelines::config::sources::StdinSource;
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};

use crate::line_reader::{read_lines, Overlong};

pub struct Stdin {
    max_line: usize,
}

impl Stdin {
    pub fn new(c: &StdinSource) -> Self {
        Self {
            max_line: c.max_line_bytes,
        }
    }
}

impl Source for Stdin {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let input = BufReader::with_capacity(1 << 20, tokio::io::stdin());
            let name = cx.name.clone();
            read_lines(
                input,
                "stdin",
                self.max_line,
                Overlong::Skip,
                cx.shutdown.clone(),
                &cx.out,
                &cx.metrics,
                |line, _| {
                    let mut e = Event::raw(line);
                    e.meta.source = name.clone();
                    Some(e)
                },
                |_| {},
            )
            .await?;
            Ok(())
        })
    }
}
