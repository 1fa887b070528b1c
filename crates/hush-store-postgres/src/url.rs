//! A database URL that keeps its password to itself: `Debug` and `Display` show
//! `***` in its place, so a URL can sit in settings, errors and logs safely.
use serde::Deserialize;

/// A database URL as given. It may hold a password, so its `Debug` and `Display`
/// show `***` in its place; only [`DatabaseUrl::expose`] gives the URL itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (in the authority or a `password=` parameter)
    /// replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let mut out = match url.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = match rest.find(['/', '?']) {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                let authority = match authority.rsplit_once('@') {
                    Some((userinfo, host)) => match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***@{host}"),
                        None => authority.to_owned(),
                    },
                    None => authority.to_owned(),
                };
                format!("{scheme}://{authority}{tail}")
            }
            None => url.clone(),
        };
        if let Some(i) = out.find("password=") {
            let end = out[i..].find('&').map_or(out.len(), |j| i + j);
            out.replace_range(i + "password=".len()..end, "***");
        }
        out
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://hush:s3cret@db:5432/hush",
                "postgres://hush:***@db:5432/hush",
            ),
            (
                "postgres://hush@db/hush?password=s3cret&sslmode=require",
                "postgres://hush@db/hush?password=***&sslmode=require",
            ),
            ("postgres://hush:s3cret@db", "postgres://hush:***@db"),
            ("postgres://db/hush", "postgres://db/hush"),
        ] {
            let u = DatabaseUrl::new(url);
            assert_eq!(u.redacted(), shown);
            assert!(!format!("{u:?} {u}").contains("s3cret"));
            assert_eq!(u.expose(), url);
        }
    }
}
