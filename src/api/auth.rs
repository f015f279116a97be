//! Who may call a write endpoint.
//!
//! With `[http] write_token` (or `BUILDMASTER_WRITE_TOKEN`) set, a write
//! needs `Authorization: Bearer <token>` (compared in constant time).
//! Without a token, writes are accepted from loopback addresses only, and
//! the master warns at start-up.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;

/// Proof that the caller may write. Add it to a handler's arguments.
pub struct WriteAccess;

impl<S> FromRequestParts<S> for WriteAccess
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or(""));
        authorize(state.write_token(), presented, peer).map(|()| WriteAccess)
    }
}

/// The rule, apart from HTTP plumbing.
///
/// Fails with 401 when a token is configured and the request does not carry
/// it, and with 403 when no token is configured and the peer is not on
/// loopback.
pub fn authorize(
    token: Option<&str>,
    authorization: Option<&str>,
    peer: Option<SocketAddr>,
) -> Result<(), ApiError> {
    match token {
        Some(token) => {
            let Some(value) = authorization else {
                return Err(ApiError::unauthorized(
                    "this endpoint needs Authorization: Bearer <write token>",
                ));
            };
            let presented = value.strip_prefix("Bearer ").unwrap_or("").trim();
            if presented.as_bytes().ct_eq(token.as_bytes()).into() {
                Ok(())
            } else {
                Err(ApiError::unauthorized("the write token is wrong"))
            }
        }
        None => match peer {
            Some(addr) if addr.ip().is_loopback() => Ok(()),
            _ => Err(ApiError::forbidden(
                "no write token is configured, so writes are accepted from this machine only; \
                 set [http] write_token or BUILDMASTER_WRITE_TOKEN to allow remote callers",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_a_token_only_loopback_may_write() {
        assert!(authorize(None, None, addr("127.0.0.1:5000")).is_ok());
        assert!(authorize(None, None, addr("[::1]:5000")).is_ok());
        let refused = authorize(None, None, addr("192.0.2.7:5000")).unwrap_err();
        assert_eq!(refused.status().as_u16(), 403);
        assert_eq!(
            authorize(None, None, None).unwrap_err().status().as_u16(),
            403
        );
    }

    #[test]
    fn with_a_token_everyone_needs_it_loopback_included() {
        let token = Some("s3cret");
        assert!(authorize(token, Some("Bearer s3cret"), addr("192.0.2.7:1")).is_ok());
        for wrong in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let error = authorize(token, wrong, addr("127.0.0.1:1")).unwrap_err();
            assert_eq!(error.status().as_u16(), 401, "{wrong:?}");
        }
    }
}
