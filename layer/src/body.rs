//! [`AuditBody`]: the request body the wrapped service receives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body as the wrapped service sees it: the original body
    /// streamed through untouched, or the bytes the layer read to record
    /// them, or the error reading them failed with (handed on, so the
    /// service reports it as it would have).
    pub struct AuditBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Buffered { data: Option<Bytes> },
        Streaming { #[pin] inner: B },
        Failed { error: Option<B::Error> },
    }
}

impl<B: Body> AuditBody<B> {
    pub(crate) fn streaming(inner: B) -> Self {
        AuditBody {
            kind: Kind::Streaming { inner },
        }
    }

    pub(crate) fn buffered(data: Bytes) -> Self {
        AuditBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn failed(error: B::Error) -> Self {
        AuditBody {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for AuditBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Streaming { inner } => inner.poll_frame(cx),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data } => data.is_none(),
            Kind::Streaming { inner } => inner.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { inner } => inner.size_hint(),
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn each_kind_yields_what_it_holds() {
        let streamed = AuditBody::streaming(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(streamed.size_hint().exact(), Some(3));
        let bytes = streamed.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"abc");

        let buffered = AuditBody::<Full<Bytes>>::buffered(Bytes::from_static(b"xyz"));
        assert_eq!(buffered.size_hint().exact(), Some(3));
        let bytes = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"xyz");

        let empty = AuditBody::<Full<Bytes>>::buffered(Bytes::new());
        assert!(empty.is_end_stream());

        let failed = AuditBody::<http_body_util::combinators::BoxBody<Bytes, String>>::failed(
            "broken".to_string(),
        );
        assert_eq!(failed.collect().await.err().as_deref(), Some("broken"));
    }
}
