//! gRPC: refusals as `tonic::Status`.
//!
//! | refusal | status code |
//! |---|---|
//! | [`FreqLimitError::Rejected`] | `RESOURCE_EXHAUSTED`, with `retry-after` metadata in whole seconds (rounded up) and `grpc-retry-pushback-ms` (gRFC A6, rounded up) |
//! | [`FreqLimitError::CostExceedsCapacity`] | `RESOURCE_EXHAUSTED` |
//! | [`FreqLimitError::KeyNotFound`], the client's omission | `INVALID_ARGUMENT` |
//! | [`FreqLimitError::KeyNotFound`], the server's setup | `INTERNAL` |
//! | [`FreqLimitError::Backend`] | `UNAVAILABLE` |

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::FreqLimitError;
use crate::layer::{BoxError, OnRefusal};
use crate::params::FreqLimitParams;

impl From<FreqLimitError> for Status {
    /// ```
    /// use tower_freqlimit::{gcra, FreqLimitError, FreqLimitParams, Reserve};
    ///
    /// let params = FreqLimitParams::per_second(2);
    /// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
    /// let refusal = FreqLimitError::from(
    ///     gcra::reserve(first.new_tat, 0, &params, &Reserve::new().no_wait()).unwrap_err(),
    /// );
    /// let status = tonic::Status::from(refusal);
    /// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    /// assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    /// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "500");
    /// ```
    fn from(refusal: FreqLimitError) -> Self {
        let code = match refusal {
            FreqLimitError::Rejected(_) | FreqLimitError::CostExceedsCapacity { .. } => {
                Code::ResourceExhausted
            }
            FreqLimitError::KeyNotFound(missing) if missing.is_client_error() => {
                Code::InvalidArgument
            }
            FreqLimitError::KeyNotFound(_) => Code::Internal,
            FreqLimitError::Backend(_) => Code::Unavailable,
        };
        let mut status = Status::new(code, refusal.to_string());
        if let FreqLimitError::Rejected(rejection) = &refusal {
            let metadata = status.metadata_mut();
            metadata.insert(
                "retry-after",
                MetadataValue::from(rejection.retry_after_secs()),
            );
            // gRFC A6 server pushback, honoured by gRPC clients with a retry policy.
            let millis = rejection.retry_after().as_nanos().div_ceil(1_000_000);
            metadata.insert(
                "grpc-retry-pushback-ms",
                MetadataValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
            );
        }
        status
    }
}

/// Refusals become a boxed [`tonic::Status`], which tonic's server sends as the
/// call's status. Inner errors are boxed as they are.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::FreqLimitParams;
/// use tower_freqlimit::grpc::GrpcStatus;
/// use tower_freqlimit::layer::FreqLimitLayer;
///
/// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::global())
///     .on_refusal(GrpcStatus);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatus;

impl<Res, E> OnRefusal<Res, E> for GrpcStatus
where
    E: Into<BoxError>,
{
    type Error = BoxError;

    fn refused(&self, refusal: FreqLimitError, _: &FreqLimitParams) -> Result<Res, BoxError> {
        Err(Box::new(Status::from(refusal)))
    }

    fn inner_error(&self, error: E) -> BoxError {
        error.into()
    }
}
