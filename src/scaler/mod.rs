//! KEDA's external scaler protocol: trigger metadata ([`trigger`]), the registry of known
//! triggers, each parsed once ([`registry`]), and the gRPC service ([`service`]), which evaluates through [`crate::query::QueryEngine`]. **Invariant:** only this
//! module knows the KEDA protocol.

pub mod registry;
pub mod service;
pub mod trigger;

/// Types generated from `proto/externalscaler.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

pub use service::ScalerService;
pub use trigger::TriggerSpec;
