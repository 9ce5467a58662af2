//! The upstream session: one `digitalAudience` cookie per service account, obtained lazily,
//! renewed when a call reports it expired, with never more than one login at a time.

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use super::api::SESSION_COOKIE;
use tokio::sync::{Mutex, RwLock};

/// A session cookie and the generation it belongs to.
#[derive(Clone)]
pub struct SessionCookie {
    /// `Cookie: digitalAudience=<value>`, built once per session and marked sensitive
    /// (never printed by `Debug`, kept out of HPACK tables).
    pub header: HeaderValue,
    pub generation: u64,
}

impl SessionCookie {
    fn new(value: &SecretString, generation: u64) -> Self {
        let text = format!("{}={}", SESSION_COOKIE, value.expose_secret());
        // A cookie the upstream set is header text; anything else is sent as empty and
        // refused upstream, which renews the session.
        let mut header =
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
        header.set_sensitive(true);
        Self { header, generation }
    }
}

/// Holds the current cookie; `renew` serialises logins.
pub struct Session {
    current: RwLock<Option<SessionCookie>>,
    login_lock: Mutex<()>,
}

impl Session {
    /// A session, optionally seeded with a ready cookie from the settings.
    pub fn new(initial: Option<SecretString>) -> Self {
        Self {
            current: RwLock::new(initial.map(|value| SessionCookie::new(&value, 1))),
            login_lock: Mutex::new(()),
        }
    }

    /// The cookie in use, if any.
    pub async fn current(&self) -> Option<SessionCookie> {
        self.current.read().await.clone()
    }

    /// Replaces the cookie that had generation `stale` (0 when there was none) by a new one
    /// from `login`. Callers that find the session already renewed by someone else get the
    /// new cookie without a second login.
    pub async fn renew<F, Fut, E>(&self, stale: u64, login: F) -> Result<SessionCookie, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SecretString, E>>,
    {
        let _guard = self.login_lock.lock().await;
        if let Some(cookie) = self.current.read().await.as_ref() {
            if cookie.generation != stale {
                return Ok(cookie.clone());
            }
        }
        let value = login().await?;
        let mut current = self.current.write().await;
        let generation = current.as_ref().map_or(0, |c| c.generation) + 1;
        let cookie = SessionCookie::new(&value, generation);
        *current = Some(cookie.clone());
        Ok(cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_renewals_log_in_once() {
        let session = Arc::new(Session::new(None));
        let logins = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (session, logins) = (session.clone(), logins.clone());
            tasks.push(tokio::spawn(async move {
                session
                    .renew(0, || async {
                        logins.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, ()>(SecretString::from("c1"))
                    })
                    .await
                    .map(|c| c.generation)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(1));
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1);
    }
}
