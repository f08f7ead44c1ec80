//! API tokens: each opens one account, or every account (the admin token). A presented token is compared
//! with every configured one in constant time (through SHA-256 digests, so that neither its bytes nor its
//! length leak through timing); tokens are never logged.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::api::Scope;

pub struct Tokens {
    digests: Vec<([u8; 32], Scope)>,
}

impl Tokens {
    /// `tokens`: each token and its account (`None`: the admin token).
    pub fn new(tokens: Vec<(String, Option<String>)>) -> Tokens {
        let digests = tokens
            .into_iter()
            .map(|(token, account)| {
                let scope = match account {
                    Some(id) => Scope::Account(id.into()),
                    None => Scope::Admin,
                };
                (digest(&token), scope)
            })
            .collect();
        Tokens { digests }
    }

    /// The scope of the request's token (`X-Auth-Token`, or `Authorization: Bearer`), if it is valid.
    pub fn scope(&self, headers: &HeaderMap) -> Option<Scope> {
        let presented = headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })?
            .trim();
        self.scope_of(presented)
    }

    /// The scope of a token presented some other way (`?token=` for an event stream).
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        if token.is_empty() {
            return None;
        }
        let presented = digest(token);
        let mut found = None;
        for (digest, scope) in &self.digests {
            if bool::from(digest.ct_eq(&presented)) && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_own_account_only() {
        let tokens = Tokens::new(vec![
            ("s3cret".into(), Some("acme".into())),
            ("other".into(), Some("globex".into())),
            ("root".into(), None),
        ]);
        assert_eq!(
            tokens.scope_of("s3cret"),
            Some(Scope::Account("acme".into()))
        );
        assert_eq!(tokens.scope_of("root"), Some(Scope::Admin));
        assert_eq!(tokens.scope_of("s3cre"), None);
        assert_eq!(tokens.scope_of(""), None);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer other".parse().unwrap());
        assert_eq!(
            tokens.scope(&headers),
            Some(Scope::Account("globex".into()))
        );
        headers.insert("authorization", "Basic other".parse().unwrap());
        assert_eq!(tokens.scope(&headers), None);
    }
}
