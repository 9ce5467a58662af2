//! The upstream session: a cookie jar per upstream identity, and the session's generation.
//!
//! The jar ([`VendorCookies`], the `cookie_store` crate's RFC 6265 store behind reqwest's
//! `CookieStore` trait) keeps
//! every cookie the vendor sets, on the login or on any other answer (the `digitalAudience`
//! session, an affinity cookie such as `ARRAffinity`), and sends each back where its domain,
//! path, expiry and `Secure` flag say; a session cookie the vendor re-issues on an ordinary
//! answer (sliding expiration) simply replaces the old one. Cookie values are only ever in
//! the jar and in request headers marked sensitive: nothing prints them.
//!
//! [`Session`] knows whether there is a session and which generation it is: obtained lazily,
//! renewed when a call reports it expired (or, with a maximum age, before it gets that old),
//! with never more than one login at a time.

use std::fmt;
use std::time::Duration;

use std::sync::{PoisonError, RwLock};

use reqwest::cookie::CookieStore;
use reqwest::header::HeaderValue;
use reqwest::Url;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The vendor's cookies for one upstream identity, in an RFC 6265 store (`cookie_store`).
/// Cookies go in through [`cookie_store::CookieStore::parse`], which, unlike the store's
/// bulk insert, never logs a cookie.
#[derive(Default)]
pub struct VendorCookies(RwLock<cookie_store::CookieStore>);

impl VendorCookies {
    /// A jar holding `cookie` (a `Set-Cookie` value) as if `url` had set it.
    pub fn seeded(cookie: &str, url: &Url) -> Self {
        let jar = VendorCookies::default();
        jar.store(cookie, url);
        jar
    }

    fn store(&self, set_cookie: &str, url: &Url) {
        // A cookie the store refuses (another domain, say) is dropped, as a browser does.
        let _ = self
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .parse(set_cookie, url);
    }
}

impl CookieStore for VendorCookies {
    fn set_cookies(&self, cookie_headers: &mut dyn Iterator<Item = &HeaderValue>, url: &Url) {
        for value in cookie_headers {
            if let Ok(text) = value.to_str() {
                self.store(text, url);
            }
        }
    }

    /// The `Cookie` header for `url`, marked sensitive (never printed by `Debug`, kept out
    /// of HPACK tables).
    fn cookies(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let pairs: Vec<String> = store
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let mut value = HeaderValue::from_str(&pairs.join("; ")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for VendorCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VendorCookies(..)")
    }
}

/// A session's generation and when it was obtained.
#[derive(Clone, Copy)]
struct Stamp {
    generation: u64,
    obtained: Instant,
}

/// Which session is current; `renew` serialises logins.
pub struct Session {
    current: tokio::sync::RwLock<Option<Stamp>>,
    login_lock: Mutex<()>,
    max_age: Option<Duration>,
}

impl Session {
    /// A session, `seeded` when the jar already holds a cookie from the settings; with
    /// `max_age`, a session older than that is renewed before it is used.
    pub fn new(seeded: bool, max_age: Option<Duration>) -> Self {
        let first = seeded.then(|| Stamp {
            generation: 1,
            obtained: Instant::now(),
        });
        Self {
            current: tokio::sync::RwLock::new(first),
            login_lock: Mutex::new(()),
            max_age,
        }
    }

    fn usable(&self, stamp: &Stamp) -> bool {
        self.max_age
            .is_none_or(|max| stamp.obtained.elapsed() < max)
    }

    /// The generation to use, or the one to [`Session::renew`] (0 when there is none).
    pub async fn current(&self) -> Result<u64, u64> {
        match self.current.read().await.as_ref() {
            Some(s) if self.usable(s) => Ok(s.generation),
            Some(s) => Err(s.generation),
            None => Err(0),
        }
    }

    /// Replaces the session of generation `stale` (0 when there was none) by one from
    /// `login` (which fills the jar). Callers that find the session already renewed by
    /// someone else get the new generation without a second login.
    pub async fn renew<F, Fut, E>(&self, stale: u64, login: F) -> Result<u64, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let _guard = self.login_lock.lock().await;
        if let Some(stamp) = self.current.read().await.as_ref() {
            if stamp.generation != stale && self.usable(stamp) {
                return Ok(stamp.generation);
            }
        }
        login().await?;
        let mut current = self.current.write().await;
        let generation = current.as_ref().map_or(0, |s| s.generation) + 1;
        *current = Some(Stamp {
            generation,
            obtained: Instant::now(),
        });
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_renewals_log_in_once() {
        let session = Arc::new(Session::new(false, None));
        let logins = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (session, logins) = (session.clone(), logins.clone());
            tasks.push(tokio::spawn(async move {
                session
                    .renew(0, || async {
                        logins.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, ()>(())
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(1));
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_past_its_maximum_age_is_renewed_before_use() {
        let session = Session::new(false, Some(Duration::from_secs(60)));
        let login = || async { Ok::<_, ()>(()) };
        assert_eq!(session.current().await.err(), Some(0));
        let first = session.renew(0, login).await.unwrap();
        assert_eq!(session.current().await, Ok(1));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(session.current().await.err(), Some(first));
        let second = session.renew(first, login).await.unwrap();
        assert_eq!(second, 2);
        assert_eq!(session.current().await, Ok(2));
    }

    #[test]
    fn the_jar_keeps_every_cookie_by_its_attributes_and_marks_them_sensitive() {
        let url = Url::parse("http://vendor.test/api").unwrap();
        let jar = VendorCookies::seeded("digitalAudience=s1; Path=/", &url);
        let set = [
            HeaderValue::from_static("ARRAffinity=a1; Path=/; HttpOnly; Domain=vendor.test"),
            HeaderValue::from_static("digitalAudience=s2; Path=/; HttpOnly"),
            HeaderValue::from_static("other=o; Path=/elsewhere"),
            HeaderValue::from_static("gone=g; Path=/; Max-Age=0"),
        ];
        jar.set_cookies(&mut set.iter(), &url);
        let sent = jar.cookies(&url).unwrap();
        assert!(sent.is_sensitive());
        let mut pairs: Vec<&str> = sent.to_str().unwrap().split("; ").collect();
        pairs.sort_unstable();
        // `Secure` only over https; another path not sent; the session re-issued.
        assert_eq!(pairs, ["ARRAffinity=a1", "digitalAudience=s2"]);
        let https = Url::parse("https://vendor.test/api").unwrap();
        let secure =
            HeaderValue::from_static("ARRAffinitySameSite=a1; Path=/; Secure; SameSite=None");
        jar.set_cookies(&mut [secure].iter(), &https);
        assert!(!jar
            .cookies(&url)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("SameSite"));
        let secure = jar.cookies(&https).unwrap();
        assert!(secure.to_str().unwrap().contains("ARRAffinitySameSite=a1"));
        assert!(jar
            .cookies(&Url::parse("http://other.test/").unwrap())
            .is_none());
        assert_eq!(format!("{jar:?}"), "VendorCookies(..)");
    }
}
