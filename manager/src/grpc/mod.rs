//! gRPC services: the delegate protocol (`delegate_svc`), the public API
//! (`api_svc`, with `peers` for views that span replicas), and the one place
//! errors become `tonic::Status` (`status`).

pub mod api_svc;
pub mod delegate_svc;
pub mod entities_svc;
pub mod peers;
pub mod pipelines_svc;
pub mod status;
pub mod triggers_svc;
