//! The lake as DataFusion sees it: an object store wrapper whose listings show only what a
//! reader should read (`trib_lake::layout::visible`): no `.tmp` files, and no files superseded
//! by a compacted file. Reads pass through; writes are refused (SQL reads the lake).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use trib_lake::store::Object;

/// A read-only view of the lake's object store.
#[derive(Debug)]
pub struct LakeView {
    inner: Arc<dyn ObjectStore>,
}

impl LakeView {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for LakeView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeView({})", self.inner)
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the lake is read-only from SQL".into(),
    }
}

/// The entries of `metas` a reader should see, in their order.
fn visible(metas: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let objects: Vec<Object> = metas
        .iter()
        .map(|m| Object {
            key: m.location.to_string(),
            size: m.size,
        })
        .collect();
    let keep: std::collections::HashSet<String> = trib_lake::layout::visible(&objects)
        .into_iter()
        .map(|o| o.key.clone())
        .collect();
    metas
        .into_iter()
        .filter(|m| keep.contains(m.location.as_ref()))
        .collect()
}

#[async_trait]
impl ObjectStore for LakeView {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // Superseding is decided per folder, so the whole listing is read before any of it is
        // shown.
        let all = self.inner.list(prefix);
        futures::stream::once(async move { all.try_collect::<Vec<_>>().await })
            .map_ok(|metas| futures::stream::iter(visible(metas).into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects = visible(r.objects);
        Ok(r)
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only())
    }
}
