//! The OpenAPI document of `/api/v1`, generated from the handlers'
//! annotations (utoipa) and served at `GET /api/v1/openapi.json`.

use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::{changes, control, force, reads};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "buildmaster API",
        description = "Changes in, builds out. Read endpoints return rows of the published views \
                       (buildmaster_v1); their columns are documented in views/README.md. Write \
                       endpoints need `Authorization: Bearer <write token>` when the master has one, \
                       else a loopback client, and honour `Idempotency-Key`."
    ),
    paths(
        changes::post_change,
        force::force_builder,
        control::stop_build,
        control::cancel_request,
        reads::builders,
        reads::builder,
        reads::builds,
        reads::build,
        reads::build_steps,
        reads::log_lines,
        reads::build_requests,
        reads::changes,
        reads::workers,
        reads::masters,
    ),
    components(schemas(ErrorBody, changes::ChangeRequest, force::ForceRequest))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`
pub async fn document() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
