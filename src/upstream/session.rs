//! The upstream session: one `digitalAudience` cookie per service account, obtained lazily,
//! renewed when a call reports it expired (or, with a maximum age, before it gets that old),
//! with never more than one login at a time.

use std::time::Duration;

use tokio::time::Instant;

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
    obtained: Instant,
}

impl SessionCookie {
    fn new(value: &SecretString, generation: u64) -> Self {
        let text = format!("{}={}", SESSION_COOKIE, value.expose_secret());
        // A cookie the upstream set is header text; anything else is sent as empty and
        // refused upstream, which renews the session.
        let mut header =
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
        header.set_sensitive(true);
        Self {
            header,
            generation,
            obtained: Instant::now(),
        }
    }
}

/// Holds the current cookie; `renew` serialises logins.
pub struct Session {
    current: RwLock<Option<SessionCookie>>,
    login_lock: Mutex<()>,
    max_age: Option<Duration>,
}

impl Session {
    /// A session, optionally seeded with a ready cookie from the settings; with `max_age`,
    /// a cookie older than that is renewed before it is used.
    pub fn new(initial: Option<SecretString>, max_age: Option<Duration>) -> Self {
        Self {
            current: RwLock::new(initial.map(|value| SessionCookie::new(&value, 1))),
            login_lock: Mutex::new(()),
            max_age,
        }
    }

    fn usable(&self, cookie: &SessionCookie) -> bool {
        self.max_age
            .is_none_or(|max| cookie.obtained.elapsed() < max)
    }

    /// The cookie to use, or the generation to [`Session::renew`] (0 when there is none).
    pub async fn current(&self) -> Result<SessionCookie, u64> {
        match self.current.read().await.as_ref() {
            Some(c) if self.usable(c) => Ok(c.clone()),
            Some(c) => Err(c.generation),
            None => Err(0),
        }
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
            if cookie.generation != stale && self.usable(cookie) {
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
        let session = Arc::new(Session::new(None, None));
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

    #[tokio::test(start_paused = true)]
    async fn a_session_past_its_maximum_age_is_renewed_before_use() {
        let session = Session::new(None, Some(Duration::from_secs(60)));
        let login = |v: &'static str| move || async move { Ok::<_, ()>(SecretString::from(v)) };
        assert_eq!(session.current().await.err(), Some(0));
        let first = session.renew(0, login("c1")).await.unwrap();
        assert_eq!(session.current().await.map(|c| c.generation), Ok(1));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(session.current().await.err(), Some(first.generation));
        let second = session.renew(first.generation, login("c2")).await.unwrap();
        assert_eq!(second.generation, 2);
        assert_eq!(session.current().await.map(|c| c.generation), Ok(2));
    }
}
